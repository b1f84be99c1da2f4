#!/usr/bin/env bash
# A filesystem for large benchmark trees: ext4 in a sparse file, mounted through a loop device.
#
#   bash bench/loopfs.sh mount IMAGE MOUNTPOINT [SIZE] [INODES]   # e.g. /tmp/bench.img /tmp/bench 160G 64000000
#   bash bench/loopfs.sh umount IMAGE MOUNTPOINT                  # unmount and delete the image
#
# Why: a generated tree of 1M tags has ~22M files and directories. A default ext4 root
# filesystem of 250 GB has 16M inodes and would give each small directory and link file a 4 KiB
# block (~90 GB). This one has enough inodes and keeps small directories and link files inside
# their inodes (inline_data), so the tree takes ~25 GB and its metadata fits in the page cache.
# The image is sparse: only what is written takes space. Needs root (mount, losetup).
set -euo pipefail

cmd=${1:?usage: loopfs.sh mount|umount IMAGE MOUNTPOINT [SIZE] [INODES]}
image=${2:?image file}
mountpoint=${3:?mount point}

case "$cmd" in
  mount)
    size=${4:-160G}
    inodes=${5:-64000000}
    if [[ ! -e "$image" ]]; then
      truncate -s "$size" "$image"
      mkfs.ext4 -q -F -O inline_data -I 256 -N "$inodes" -m 0 \
        -E lazy_itable_init=1,lazy_journal_init=1 "$image"
    fi
    mkdir -p "$mountpoint"
    device=$(losetup --find --show --direct-io=on "$image")
    # direct I/O: the page cache then holds the filesystem once, as for a disk, not also the
    # image's pages (losetup may fall back silently when it is set before the first read)
    [[ $(cat "/sys/block/${device#/dev/}/loop/dio") == 1 ]] || losetup --direct-io=on "$device"
    echo "$device: direct I/O $(cat "/sys/block/${device#/dev/}/loop/dio")"
    mount -o noinit_itable "$device" "$mountpoint"  # no background zeroing of inode tables
    df -h "$mountpoint"; df -i "$mountpoint"
    ;;
  umount)
    device=$(findmnt -n -o SOURCE "$mountpoint" || true)
    if [[ -n "$device" ]]; then
      umount "$mountpoint"
      losetup -d "$device" 2>/dev/null || true
    fi
    rm -f "$image"
    rmdir "$mountpoint" 2>/dev/null || true
    ;;
  *)
    echo "usage: loopfs.sh mount|umount IMAGE MOUNTPOINT [SIZE] [INODES]" >&2
    exit 2
    ;;
esac
