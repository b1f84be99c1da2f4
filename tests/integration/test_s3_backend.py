"""The S3 backend of the storage port (retentiond.storage.s3) against a real S3 server (the
session's Ceph RADOS Gateway, tests/harness/s3.py): every port call on objects put with boto3,
the shapes a disk cannot hold, a rootdirectory, readers pickled into forked workers, the checks
of open_s3_storage, the moves and their crash safety (a subprocess killed with SIGKILL in the
middle of a hold or a restore), and a tree a real registry pushed to a bucket."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from retentiond.errors import StorageError
from retentiond.storage import layout
from retentiond.storage.port import Kind
from retentiond.storage.s3 import WHOLE, S3Reader, S3Storage, open_s3_storage
from retentiond.storage.s3_settings import S3Settings
from retentiond.storage.s3_signed import Answer, SignedReads
from retentiond.storage.safe_fs import BadComponent, TooLarge
from tests.harness.images import make_oci_image
from tests.harness.registry import stop_registry
from tests.harness.s3 import S3Bucket, push_oci_to_s3, start_s3_registry

pytestmark = pytest.mark.registry

V2 = "docker/registry/v2/"
REPO = "repositories/team/app"
TAGS = f"{REPO}/_manifests/tags"
D1 = "sha256:" + "a1" * 32
D2 = "sha256:" + "b2" * 32


def settings_of(s3: S3Bucket, /, **changes: object) -> S3Settings:
    values: dict[str, object] = {
        "bucket": s3.name,
        "region": s3.region,
        "regionendpoint": s3.endpoint,
        "accesskey": s3.access_key,
        "secretkey": s3.secret_key,
        "secure": False,
        "forcepathstyle": True,
    }
    values.update(changes)
    return S3Settings(**values)  # type: ignore[arg-type]


def put(bucket: S3Bucket, key: str, body: bytes = b"") -> None:
    bucket.client().put_object(Bucket=bucket.name, Key=key, Body=body)


def contents(bucket: S3Bucket, prefix: str = "") -> dict[str, bytes]:
    client = bucket.client()
    return {
        key: client.get_object(Bucket=bucket.name, Key=key)["Body"].read()
        for key in bucket.keys(prefix)
    }


@pytest.fixture
def storage(s3_bucket: S3Bucket) -> Iterator[S3Storage]:
    with open_s3_storage(settings_of(s3_bucket)) as opened:
        yield opened


def tag_tree(bucket: S3Bucket, tag: str = "v1", digest: str = D1, history: int = 2) -> None:
    """A tag as the registry writes one: current/link and its index."""
    put(bucket, f"{V2}{TAGS}/{tag}/current/link", digest.encode())
    for i in range(history):
        hexpart = f"{i:02x}" * 32
        put(bucket, f"{V2}{TAGS}/{tag}/index/sha256/{hexpart}/link", f"sha256:{hexpart}".encode())


# -- reading --------------------------------------------------------------------------------------


def test_list_names_read_head_stat(s3_bucket: S3Bucket, storage: S3Storage) -> None:
    tag_tree(s3_bucket, "v1", D1)
    tag_tree(s3_bucket, "v2", D2)
    put(s3_bucket, f"{V2}{TAGS}/")  # a directory marker, as some tools write
    put(s3_bucket, f"{V2}{TAGS}/both", b"an object")  # and a prefix: no disk holds that
    put(s3_bucket, f"{V2}{TAGS}/both/current/link", D1.encode())
    put(s3_bucket, f"{V2}{TAGS}/file", b"x" * 300)

    entries = {e.name: e for e in storage.list(TAGS)}
    assert set(entries) == {"v1", "v2", "both", "file"}
    assert entries["v1"].kind is Kind.DIR and entries["v1"].order is None
    assert entries["both"].kind is Kind.OTHER and "no disk" in entries["both"].detail
    assert entries["file"].kind is Kind.FILE and entries["file"].size == 300
    assert entries["file"].mtime is not None and not entries["file"].is_link
    names = storage.names(TAGS)
    assert names.names == ["both", "file", "v1", "v2"] and not names.only_dirs
    only = storage.names(f"{TAGS}/v1/index/sha256")
    assert only.only_dirs and only.names == ["00" * 32, "01" * 32] and only.order is None
    with pytest.raises(FileNotFoundError) as missing:
        storage.list(f"{TAGS}/v3")
    assert missing.value.filename == f"{TAGS}/v3"

    link = storage.read(f"{TAGS}/v1/current/link", 100)
    assert link.data == D1.encode() and link.mtime > 0
    with pytest.raises(TooLarge):
        storage.read(f"{TAGS}/file", 299)
    assert storage.read(f"{TAGS}/file", 300).data == b"x" * 300
    assert storage.head(f"{TAGS}/file", 10).data == b"x" * 10
    assert storage.head(f"{TAGS}/v2/current/link", 1000).data == D2.encode()
    put(s3_bucket, f"{V2}{TAGS}/empty")
    assert storage.head(f"{TAGS}/empty", 10).data == b""
    with pytest.raises(FileNotFoundError) as gone:
        storage.read(f"{TAGS}/nothing", 10)
    assert gone.value.filename == f"{TAGS}/nothing"
    with pytest.raises(BadComponent):
        storage.read(f"{TAGS}/../x", 10)

    stat = storage.stat(f"{TAGS}/v1/current/link")
    assert (stat.kind, stat.size, stat.name) == (Kind.FILE, len(D1), "link")
    assert storage.stat(f"{TAGS}/v1").kind is Kind.DIR
    with pytest.raises(FileNotFoundError):
        storage.stat(f"{TAGS}/v9")

    below = storage.below(TAGS)
    names_now = {*entries, "empty"}
    assert {e.name for e in below.list("")} == names_now  # from the page below() read
    assert {e.name for e in below.list("")} == names_now  # and again, listed anew
    assert below.read("v1/current/link", 100).data == D1.encode()
    assert below.stat("").kind is Kind.DIR
    with pytest.raises(FileNotFoundError):
        storage.below(f"{TAGS}/v9")


def test_keys_any_character_are_listed_and_read_as_they_are(
    s3_bucket: S3Bucket, storage: S3Storage
) -> None:
    """Keys with characters a URL or XML must escape (space, ``+``, ``%``, ``&``, ``=``,
    ``~``, non-ASCII, a control character) come back from a listing, a GET and a HEAD as
    they are: the signature covers the escaped path and query, the listing is URL-encoded."""
    odd = ["a b", "a+b", "100%", "x&y=z", "~home", "caf\u00e9", "tab\there", "q?s#h"]
    for i, name in enumerate(odd):
        put(s3_bucket, f"{V2}odd/{name}", f"{i}".encode())
    assert sorted(e.name for e in storage.list("odd")) == sorted(odd)
    assert storage.names("odd").names == sorted(odd)
    for i, name in enumerate(odd):
        assert storage.read(f"odd/{name}", 10).data == f"{i}".encode()
        assert storage.stat(f"odd/{name}").size == len(f"{i}")
    below = storage.below("odd")
    assert below.head("a+b", 10).data == b"1"


def test_head_each_reads_side_by_side(s3_bucket: S3Bucket, storage: S3Storage) -> None:
    for i in range(40):
        put(s3_bucket, f"{V2}{TAGS}/t{i:02d}/current/link", f"sha256:{i:064x}".encode())
    reader = storage.below(TAGS)
    paths = [f"t{i:02d}/current/link" for i in range(41)]
    found = reader.head_each([*paths, "t00/../x"], 200)
    for i, read in enumerate(found[:40]):
        assert not isinstance(read, Exception) and read.data == f"sha256:{i:064x}".encode()
    assert isinstance(found[40], FileNotFoundError) and found[40].filename == paths[40]
    assert isinstance(found[41], BadComponent)


def test_stat_each_answers_from_listings(s3_bucket: S3Bucket, storage: S3Storage) -> None:
    hexes = [f"ab{i:062x}" for i in range(20)]
    for i, hexpart in enumerate(hexes):
        put(s3_bucket, f"{V2}{layout.blob_data(hexpart)}", b"d" * i)
    odd = "ab" + "f" * 62
    put(s3_bucket, f"{V2}{layout.blob_data(odd)}/inside", b"data is a prefix")
    missing = "ab" + "e" * 62
    store = storage.below(layout.BLOB_STORE)
    prefix = store.below("ab")

    for reader, paths in (
        (store, [layout.blob_data_in_store(h) for h in [*hexes, odd, missing]]),  # listed
        (prefix, [f"{h}/data" for h in [*hexes, odd, missing]]),  # listed
        (prefix, [f"{h}/data" for h in [hexes[3], odd, missing]]),  # a HEAD each
    ):
        found = reader.stat_each(paths)
        assert len(found) == len(paths)
        by_path = dict(zip(paths, found, strict=True))
        for path, entry in by_path.items():
            if missing in path:
                assert entry is None
            elif odd in path:
                assert entry is not None and entry.kind is Kind.DIR
            else:
                assert entry is not None and entry.kind is Kind.FILE and entry.name == path
                assert entry.size == hexes.index(path.split("/")[-2])


def test_rootdirectory_prefixes_every_key(s3_bucket: S3Bucket) -> None:
    root = "some/root"
    put(s3_bucket, f"{root}/{V2}{TAGS}/v1/current/link", D1.encode())
    put(s3_bucket, f"{V2}{TAGS}/other/current/link", D2.encode())  # outside the root
    with open_s3_storage(settings_of(s3_bucket, rootdirectory=root)) as storage:
        assert [e.name for e in storage.list(TAGS)] == ["v1"]
        assert storage.location(TAGS) == f"s3://{s3_bucket.name}/{root}/{V2}{TAGS}"
        storage.quarantine_dir("", create=True)
        storage.quarantine_dir("run1", create=True)
        storage.hold(f"{TAGS}/v1", "run1/0000000")
    assert f"{root}/retentiond-quarantine/run1/0000000/current/link" in set(s3_bucket.keys())
    assert s3_bucket.keys(f"{root}/{V2}") == []
    assert s3_bucket.keys(V2) == [f"{V2}{TAGS}/other/current/link"]


def _read_in_worker(reader: S3Reader) -> tuple[int, bytes]:
    return os.getpid(), reader.read("v1/current/link", 100).data


def test_reader_pickled_into_forked_workers(s3_bucket: S3Bucket, storage: S3Storage) -> None:
    tag_tree(s3_bucket)
    reader = storage.below(TAGS)
    assert reader.read("v1/current/link", 100).data == D1.encode()  # the parent's client
    state = reader.__getstate__()
    assert state == (storage.settings, storage.prefix + TAGS + "/")
    assert len(pickle.dumps(reader)) < 1000
    with multiprocessing.get_context("fork").Pool(3) as pool:
        answers = pool.map(_read_in_worker, [reader] * 6)
    assert {data for _, data in answers} == {D1.encode()}
    assert os.getpid() not in {pid for pid, _ in answers}
    assert reader.read("v1/current/link", 100).data == D1.encode()  # still fine here


# -- open_s3_storage ------------------------------------------------------------------------------


def test_open_refuses_what_cannot_work_and_changes_nothing(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tag_tree(s3_bucket)
    before = contents(s3_bucket)
    with pytest.raises(StorageError, match="secret key does not match"):
        open_s3_storage(settings_of(s3_bucket, secretkey="wrong" * 8))
    with pytest.raises(StorageError, match="does not know the access key"):
        open_s3_storage(settings_of(s3_bucket, accesskey="NOSUCHKEY0000000"))
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        open_s3_storage(settings_of(s3_bucket, bucket="no-such-bucket-here"))
    with pytest.raises(StorageError, match=r"cannot reach the S3 endpoint http://127\.0\.0\.1:9"):
        open_s3_storage(settings_of(s3_bucket, regionendpoint="http://127.0.0.1:9"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StorageError, match="no S3 credentials"):
        open_s3_storage(settings_of(s3_bucket, accesskey=None, secretkey=None))
    assert contents(s3_bucket) == before


# -- changing ------------------------------------------------------------------------------------


def test_hold_restore_remove_held(s3_bucket: S3Bucket, storage: S3Storage) -> None:
    tag_tree(s3_bucket, "v1", D1, history=3)
    tag_tree(s3_bucket, "v2", D2)
    original = contents(s3_bucket, V2)
    q = "retentiond-quarantine/"

    assert not storage.quarantine_dir("run1", create=False)
    assert storage.quarantine_dir("", create=True) and storage.quarantine_dir("run1", create=True)
    assert storage.quarantine_dir("run1", create=False)
    storage.check_quarantine_writable()
    assert s3_bucket.keys(q) == [q, f"{q}run1/"]
    assert storage.same_store() and storage.can_change(layout.REPOSITORIES)
    assert storage.held_stat("run1").kind is Kind.DIR

    storage.hold(f"{TAGS}/v1", "run1/0000000")
    assert not storage.is_dir(f"{TAGS}/v1") and storage.is_dir(f"{TAGS}/v2")
    held = storage.held_stat("run1/0000000")
    assert held.kind is Kind.DIR and held.mtime is not None
    assert f"{q}run1/0000000/{WHOLE}" in s3_bucket.keys(q)
    with pytest.raises(FileNotFoundError):
        storage.hold(f"{TAGS}/v1", "run1/0000001")
    with pytest.raises(FileNotFoundError):
        storage.held_stat("run1/0000001")

    put(s3_bucket, f"{V2}{TAGS}/v1/current/link", D2.encode())  # pushed again meanwhile
    with pytest.raises(FileExistsError):
        storage.restore("run1/0000000", f"{TAGS}/v1")
    storage.remove_tree(f"{TAGS}/v1")
    storage.restore("run1/0000000", f"{TAGS}/v1")
    assert contents(s3_bucket, V2) == original
    with pytest.raises(FileNotFoundError):
        storage.held_stat("run1/0000000")
    assert s3_bucket.keys(q) == [q, f"{q}run1/"]

    storage.hold(f"{TAGS}/v2", "run1/0000001")
    storage.remove_held("run1")
    assert s3_bucket.keys(q) == [q]
    with pytest.raises(FileNotFoundError):
        storage.remove_held("run1")
    assert s3_bucket.keys(f"{V2}{TAGS}/v2") == []


def test_a_whole_repository_round_trip(s3_bucket: S3Bucket, storage: S3Storage) -> None:
    tag_tree(s3_bucket, "v1", D1)
    tag_tree(s3_bucket, "v2", D2)
    for digest in (D1, D2):
        hexpart = layout.hex_of(digest)
        put(s3_bucket, f"{V2}{REPO}/_manifests/revisions/sha256/{hexpart}/link", digest.encode())
        put(s3_bucket, f"{V2}{REPO}/_layers/sha256/{hexpart}/link", digest.encode())
    put(s3_bucket, f"{V2}{REPO}/_uploads/0a1b/startedat", b"2026-01-01T00:00:00Z")
    original = contents(s3_bucket, V2)
    storage.quarantine_dir("", create=True)
    storage.quarantine_dir(layout.LAYER_LINKS_HELD, create=True)
    held = layout.held_layer_link(0)

    with pytest.raises(FileNotFoundError):
        storage.restore(held, REPO)  # nothing held (whole) under that name
    storage.hold(REPO, held)
    assert s3_bucket.keys(V2) == []
    storage.restore(held, REPO)
    assert contents(s3_bucket, V2) == original
    storage.remove_held(layout.LAYER_LINKS_HELD)
    assert s3_bucket.keys("retentiond-quarantine/") == ["retentiond-quarantine/"]


def test_directories_of_a_store_without_any(s3_bucket: S3Bucket, storage: S3Storage) -> None:
    tag_tree(s3_bucket)
    storage.make_dirs(f"{TAGS}/new/deeper")  # nothing to make
    assert not storage.is_dir(f"{TAGS}/new")
    with pytest.raises(OSError, match="not empty"):
        storage.remove_dir(f"{TAGS}/v1")
    with pytest.raises(FileNotFoundError):
        storage.remove_dir(f"{TAGS}/new")
    put(s3_bucket, f"{V2}{TAGS}/marked/")
    storage.remove_dir(f"{TAGS}/marked")  # a marker alone: an empty directory
    assert s3_bucket.keys(f"{V2}{TAGS}/marked") == []
    storage.remove_tree(f"{TAGS}/v1")
    assert s3_bucket.keys(V2) == []
    with pytest.raises(FileNotFoundError):
        storage.remove_tree(f"{TAGS}/v1")
    storage.remove_tree(f"{TAGS}/v1", ignore_errors=True)
    assert storage.location("") == f"s3://{s3_bucket.name}/docker/registry/v2"


def test_large_objects_are_copied_in_parts(
    s3_bucket: S3Bucket, storage: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ``_uploads`` data file above CopyObject's 5 GiB is copied in parts; a 12 MiB one
    with the threshold lowered to 5 MiB here (5 GiB would not fit in the test server's RAM)."""
    from boto3.s3.transfer import TransferConfig

    from retentiond.storage import s3_objects

    small = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    monkeypatch.setattr(s3_objects, "MULTIPART_FROM", 5 << 20)
    monkeypatch.setattr(s3_objects, "_MULTIPART", small)
    data = os.urandom(12 << 20)
    upload = f"{REPO}/_uploads/0b1c"
    put(s3_bucket, f"{V2}{upload}/data", data)
    put(s3_bucket, f"{V2}{upload}/startedat", b"2026-01-01T00:00:00Z")
    storage.quarantine_dir("", create=True)
    storage.quarantine_dir("run1", create=True)
    storage.hold(upload, "run1/0000000")
    key = "retentiond-quarantine/run1/0000000/data"
    etag = s3_bucket.client().head_object(Bucket=s3_bucket.name, Key=key)["ETag"]
    assert "-" in etag  # a multipart copy's
    storage.restore("run1/0000000", upload)
    assert contents(s3_bucket, f"{V2}{upload}/data")[f"{V2}{upload}/data"] == data


# -- crash safety --------------------------------------------------------------------------------

_MOVER = textwrap.dedent(
    """
    import json, sys, threading
    from retentiond.storage import s3_objects
    from retentiond.storage.s3 import S3Storage
    from retentiond.storage.s3_settings import S3Settings

    lock = threading.Lock()
    def say(what):
        with lock:
            sys.stdout.write(what + "\\n")
            sys.stdout.flush()
    Bucket = s3_objects.Bucket
    copy, batch, put = Bucket.copy, Bucket._delete_batch, Bucket.put
    def copied(self, src, dst, size, path):
        copy(self, src, dst, size, path)
        say("copy")
    def deleted(self, keys, path):
        batch(self, keys, path)
        say("delete %d" % len(keys))
    def written(self, key, body, path):
        put(self, key, body, path)
        say("put " + key.rpartition("/")[2])
    Bucket.copy, Bucket._delete_batch, Bucket.put = copied, deleted, written
    s3_objects.PAGE = 100  # smaller delete batches: a few of them for a few hundred objects
    args = json.loads(sys.argv[1])
    storage = S3Storage(S3Settings(**args.pop("settings")))
    getattr(storage, args["call"])(*args["args"])
    say("done")
    """
)


def _run_mover(settings: S3Settings, call: str, args: list[str], kill_at: str | None) -> bool:
    """Run ``storage.<call>(*args)`` in a subprocess, killed with SIGKILL when it prints the
    line ``kill_at`` (``copy 40``: its 40th copy); True when it finished."""
    fields = {f: getattr(settings, f) for f in settings.__dataclass_fields__}
    payload = json.dumps({"settings": fields, "call": call, "args": args})
    proc = subprocess.Popen(
        [sys.executable, "-c", _MOVER, payload], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    counts: dict[str, int] = {}
    try:
        for line in proc.stdout:
            event = line.split()[0] if line.strip() else ""
            counts[event] = counts.get(event, 0) + 1
            if kill_at is not None and f"{event} {counts[event]}" == kill_at:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return False
    finally:
        proc.stdout.close()
        proc.wait()
    assert proc.returncode == 0
    return True


def etags(bucket: S3Bucket, prefix: str) -> dict[str, str]:
    """Every key below ``prefix`` with its ETag (its content's MD5): one listing, no GET."""
    found: dict[str, str] = {}
    for page in (
        bucket.client().get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix=prefix)
    ):
        found.update((obj["Key"], obj["ETag"]) for obj in page.get("Contents", []))
    return found


@pytest.mark.parametrize("kill_at", ["copy 20", "put 1", "delete 1", "delete 2"])
def test_hold_killed_keeps_its_promise(
    s3_bucket: S3Bucket, storage: S3Storage, kill_at: str
) -> None:
    """A tag directory of 301 objects (its current/link and 300 index links), held by a
    process killed with SIGKILL after some copies, after the marker, after the deletion of
    the tag's link, after 100 more deletes (batches of 100 there). Either the tag is whole and
    nothing held, or the held copy is whole and the tag's current/link gone; a retry of the
    hold finishes; a restore killed half-way leaves the held copy whole and the link not put
    back yet, and its retry puts back every byte."""
    path, held = f"{TAGS}/v1", "run1/0000000"
    put(s3_bucket, f"{V2}{path}/current/link", D1.encode())
    keys = [f"{V2}{path}/index/sha256/{i:064x}/link" for i in range(300)]
    with ThreadPoolExecutor(8) as threads:
        list(threads.map(lambda k: put(s3_bucket, k, k.encode()), keys))
    original = etags(s3_bucket, V2)
    storage.quarantine_dir("", create=True)
    storage.quarantine_dir("run1", create=True)

    assert not _run_mover(storage.settings, "hold", [path, held], kill_at)

    left = etags(s3_bucket, V2)
    try:
        storage.held_stat(held)
    except FileNotFoundError:
        assert left == original, "nothing held: the tag is whole"
    else:
        copies = etags(s3_bucket, f"retentiond-quarantine/{held}/")
        assert sorted(copies.values()) == sorted(
            [*original.values(), copies[f"retentiond-quarantine/{held}/{WHOLE}"]]
        )
        if left != original:
            assert f"{V2}{path}/current/link" not in left, "its link is deleted first"
    assert _run_mover(storage.settings, "hold", [path, held], None)
    assert s3_bucket.keys(V2) == []
    assert storage.held_stat(held).kind is Kind.DIR

    assert not _run_mover(storage.settings, "restore", [held, path], "copy 150")
    storage.held_stat(held)  # whole until the tag is
    assert f"{V2}{path}/current/link" not in s3_bucket.keys(V2), "the link is put back last"
    assert _run_mover(storage.settings, "restore", [held, path], None)
    assert etags(s3_bucket, V2) == original
    assert s3_bucket.keys("retentiond-quarantine/") == [
        "retentiond-quarantine/",
        "retentiond-quarantine/run1/",
    ]


# -- a tree a real registry wrote -----------------------------------------------------------------


def test_reads_what_a_real_registry_pushed(
    docker_ready: None, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    image = make_oci_image([b"s3 backend layer"], seed="s3-backend")
    reg = start_s3_registry(s3_bucket, tmp_path / "registry", version="2.8.2")
    try:
        push_oci_to_s3(reg, s3_bucket, "team/app", "v1", image)
    finally:
        stop_registry(reg)
    with open_s3_storage(settings_of(s3_bucket)) as storage:
        repos = storage.below(layout.REPOSITORIES)
        assert [e.name for e in repos.list("team")] == ["app"]
        app = repos.below("team/app")
        assert {e.name for e in app.list("")} >= {"_manifests", "_layers"}
        assert app.names(layout.TAGS).names == ["v1"]
        link = app.head(layout.in_repository_tag_link("v1"), 200)
        assert link.data.decode() == image.digest
        store = storage.below(layout.BLOB_STORE)
        manifest = store.read(layout.blob_data_in_store(layout.hex_of(image.digest)), 1 << 20)
        assert manifest.data == image.manifest
        sizes = store.stat_each(
            [layout.blob_data_in_store(layout.hex_of(d)) for d in sorted(image.blob_digests)]
        )
        assert all(e is not None and e.kind is Kind.FILE for e in sizes)


def test_digest_links_are_read_from_a_listing_unless_their_etag_says_otherwise(
    s3_bucket: S3Bucket, storage: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revision link holding its directory's digest is answered from the listing (its
    ETag is the MD5 of ``sha256:<hex>``): no GET. One holding anything else is read with a
    GET, so what it holds (here another digest) is what the reader sees and reports."""
    revisions = f"{REPO}/_manifests/revisions/sha256"
    good, bad = "c3" * 32, "d4" * 32
    put(s3_bucket, f"{V2}{revisions}/{good}/link", f"sha256:{good}".encode())
    put(s3_bucket, f"{V2}{revisions}/{bad}/link", D1.encode())
    reader = storage.below(revisions)
    gets: list[str] = []
    real_get = SignedReads.get

    def counted(self: SignedReads, key: str, *args: Any, **kwargs: Any) -> Answer:
        gets.append(key)
        return real_get(self, key, *args, **kwargs)

    monkeypatch.setattr(SignedReads, "get", counted)
    assert reader.head(f"{good}/link", 200).data == f"sha256:{good}".encode()
    assert gets == []
    assert reader.head(f"{bad}/link", 200).data == D1.encode()
    assert gets == [f"{V2}{revisions}/{bad}/link"]
    reader.close()


def test_tag_links_are_read_from_a_listing_unless_it_cannot_prove_them(
    s3_bucket: S3Bucket, storage: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tags directory's ``current/link`` files are answered from one listing of it when
    the link's ETag is the MD5 of ``sha256:<hex>`` for a digest of the tag's own index: no
    GET, and the push time is the link's LastModified in whole seconds (a GET's resolution).
    A link that names a digest outside its index, and a tag a run put back (its push time is
    in its metadata, which no listing shows), are read with a GET: what they hold and the push
    time kept are what the reader sees."""
    tag_tree(s3_bucket, "v1", "sha256:" + "00" * 32, history=2)  # index 00.., 01..
    tag_tree(s3_bucket, "v2", D2, history=2)  # current names a digest outside its index
    tag_tree(s3_bucket, "v3", "sha256:" + "01" * 32, history=2)
    put(s3_bucket, f"{V2}{TAGS}/only-index/index/sha256/{'00' * 32}/link", b"sha256:" + b"00" * 32)
    listed = {
        k: v for k, v in s3_bucket.mtimes(f"{V2}{TAGS}/").items() if k.endswith("current/link")
    }

    storage.quarantine_dir("", create=True)
    storage.quarantine_dir("run1", create=True)
    storage.hold(f"{TAGS}/v3", "run1/0000000")
    time.sleep(1.1)  # the copy back is later than the push by a second at least
    storage.restore("run1/0000000", f"{TAGS}/v3")
    records = s3_bucket.keys("retentiond-restored/")
    assert len(records) == 1 and records[0].startswith(f"retentiond-restored/{TAGS}/v3/run1-")

    gets: list[str] = []
    real_get = SignedReads.get

    def counted(self: SignedReads, key: str, *args: Any, **kwargs: Any) -> Answer:
        gets.append(key.rpartition(f"{TAGS}/")[2])
        return real_get(self, key, *args, **kwargs)

    monkeypatch.setattr(SignedReads, "get", counted)
    tags = storage.below(TAGS)
    assert tags.names("").names == ["only-index", "v1", "v2", "v3"]
    v1 = tags.head("v1/current/link", 200)
    assert v1.data == b"sha256:" + b"00" * 32
    assert v1.mtime == float(int(listed[f"{V2}{TAGS}/v1/current/link"]))
    assert gets == []
    assert tags.head("v2/current/link", 200).data == D2.encode()
    assert gets == ["v2/current/link"]
    v3 = tags.head("v3/current/link", 200)
    assert v3.data == b"sha256:" + b"01" * 32
    assert v3.mtime == float(int(listed[f"{V2}{TAGS}/v3/current/link"]))  # the push time
    assert gets == ["v2/current/link", "v3/current/link"]
    with pytest.raises(FileNotFoundError):
        tags.head("only-index/current/link", 200)
    tags.close()
