"""Fuzz the manifest parser: ``parse_manifest`` and ``parse_created`` on arbitrary bytes.

Documented behaviour (retentiond/core/manifests.py): ``parse_manifest`` raises
``ManifestError`` and nothing else; ``parse_created`` never raises (None when unreadable).
Anything else escaping is a bug: the reader would turn it into a refused repository at best,
an exit 3 of the whole plan at worst.

    python fuzz/fuzz_manifest.py -max_total_time=20 fuzz/corpus/manifest   # fuzz
    python fuzz/fuzz_manifest.py crash-<sha1>                              # reproduce
"""

from __future__ import annotations

import contextlib
import hashlib

from harness import instrumented, main

with instrumented():
    from retentiond.core.manifests import ManifestError, parse_created, parse_manifest


def one_input(data: bytes) -> None:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with contextlib.suppress(ManifestError):
        parse_manifest(digest, data)
    parse_created(data)


if __name__ == "__main__":
    main(one_input)
