"""Fuzz the policy loader: arbitrary bytes as a policy file.

Documented behaviour (retentiond/policy/loader.py): ``load_policies`` returns the policies or
raises ``ConfigError`` (a ``UsageError``: exit 2) carrying every problem. Anything else
escaping, or an input that takes longer than ``-timeout``, is a bug (``check`` and the daemon's
reload would exit 3 or hang).

    python fuzz/fuzz_policy.py -max_total_time=20 fuzz/corpus/policy   # fuzz
    python fuzz/fuzz_policy.py crash-<sha1>                            # reproduce
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
    from retentiond.errors import UsageError
    from retentiond.policy.loader import load_policies

_DIR = Path(tempfile.mkdtemp(prefix="fuzz-policy-", dir=os.environ.get("RETENTIOND_FUZZ_TMP")))
atexit.register(shutil.rmtree, _DIR, True)
_FILE = _DIR / "policies.yaml"


def one_input(data: bytes) -> None:
    _FILE.write_bytes(data)
    with contextlib.suppress(UsageError):  # ConfigError is one
        load_policies([_FILE])


if __name__ == "__main__":
    main(one_input)
