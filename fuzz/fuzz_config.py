"""Fuzz the config loader: arbitrary bytes as ``retentiond.yaml``.

Documented behaviour (retentiond/config.py): ``load_config`` returns the config or raises
``ConfigError`` (a ``UsageError``: exit 2) listing every problem. Anything else escaping, or an
input that takes longer than ``-timeout``, is a bug.

    python fuzz/fuzz_config.py -max_total_time=20 fuzz/corpus/config   # fuzz
    python fuzz/fuzz_config.py crash-<sha1>                            # reproduce
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from harness import instrumented, main

with instrumented():
    from retentiond.config import load_config
    from retentiond.errors import UsageError

_DIR = Path(tempfile.mkdtemp(prefix="fuzz-config-", dir=os.environ.get("RETENTIOND_FUZZ_TMP")))
atexit.register(shutil.rmtree, _DIR, True)
_FILE = _DIR / "retentiond.yaml"


def one_input(data: bytes) -> None:
    _FILE.write_bytes(data)
    with contextlib.suppress(UsageError):  # ConfigError is one
        load_config(_FILE)


if __name__ == "__main__":
    main(one_input)
