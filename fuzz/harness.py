"""Run a fuzz target: with atheris (libFuzzer, coverage-guided) when it is installed, else with
a plain mutation loop over the seed corpus that takes the same command line.

A target module does::

    with instrumented():
        from retentiond... import the_code_under_test

    def one_input(data: bytes) -> None:
        ...  # raise only on a bug

    if __name__ == "__main__":
        main(one_input)

and is run as ``python fuzz/fuzz_NAME.py [libFuzzer options] CORPUS_DIR`` to fuzz, or
``python fuzz/fuzz_NAME.py FILE...`` to run the given inputs once (a reproducer).

The plain loop (``RETENTIOND_FUZZ_ENGINE=random``, or automatically without atheris) reads
``-max_total_time=S``, ``-timeout=S``, ``-seed=N``, ``-dict=FILE`` and ``-artifact_prefix=P``;
it ignores the other options. On an uncaught exception or an input that runs longer than the
timeout it writes the input to ``<artifact_prefix>crash-<sha1>`` (or ``timeout-<sha1>``),
prints the traceback and exits 1, as libFuzzer does.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

Target = Callable[[bytes], None]


def _atheris() -> Any:
    if os.environ.get("RETENTIOND_FUZZ_ENGINE", "atheris") == "random":
        return None
    try:
        import atheris  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return atheris


def instrumented() -> contextlib.AbstractContextManager[Any]:
    """Instrument the modules imported in this block for coverage (atheris only)."""
    atheris = _atheris()
    return atheris.instrument_imports() if atheris else contextlib.nullcontext()


def main(target: Target) -> None:
    atheris = _atheris()
    if atheris is not None:
        atheris.Setup(sys.argv, target)
        atheris.Fuzz()
    else:
        sys.exit(_random_loop(target, sys.argv[1:]))


# ------------------------------------------------------------------ the plain loop


class _Timeout(BaseException):
    """An input ran longer than ``-timeout`` (not an Exception: targets do not catch it)."""


def _options(argv: list[str]) -> tuple[dict[str, str], list[Path]]:
    options: dict[str, str] = {}
    paths: list[Path] = []
    for arg in argv:
        if arg.startswith("-") and "=" in arg:
            key, _, value = arg[1:].partition("=")
            options[key] = value
        else:
            paths.append(Path(arg))
    return options, paths


def _read_dict(path: str | None) -> list[bytes]:
    """The quoted tokens of a libFuzzer dictionary (``name="token"``, ``\\xNN`` escapes)."""
    if not path:
        return []
    tokens = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith("#") or '"' not in line:
            continue
        quoted = line[line.index('"') + 1 : line.rindex('"')]
        tokens.append(quoted.encode("latin-1").decode("unicode_escape").encode("latin-1"))
    return tokens


def _seeds(paths: list[Path]) -> Iterator[bytes]:
    for path in paths:
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for file in files:
            yield file.read_bytes()


def _mutate(rng: random.Random, data: bytes, tokens: list[bytes], seeds: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(out))
        choice = rng.randrange(7)
        if choice == 0 and out:  # flip a bit
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif choice == 1 and out:  # an interesting byte
            out[rng.randrange(len(out))] = rng.choice(b'\x00\xff"\\{}[]:,-&*!\n 09')
        elif choice == 2:  # random bytes
            out[at:at] = rng.randbytes(rng.randint(1, 8))
        elif choice == 3 and out:  # delete a range
            end = min(len(out), at + rng.randint(1, 16))
            del out[at:end]
        elif choice == 4 and out:  # repeat a range (nesting, long numbers)
            start = rng.randrange(len(out))
            piece = out[start : start + rng.randint(1, 16)]
            out[at:at] = piece * rng.randint(2, 64)
        elif choice == 5 and tokens:  # a dictionary token
            out[at:at] = rng.choice(tokens)
        elif seeds:  # splice with another seed
            other = rng.choice(seeds)
            cut = rng.randint(0, len(other))
            out = out[:at] + other[cut:]
    return bytes(out[: 1 << 16])


def _run_one(target: Target, data: bytes, timeout: int, prefix: str) -> bool:
    """Run one input; False (after writing and printing the reproducer) when it failed."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(timeout)
    try:
        target(data)
    except _Timeout:
        kind = "timeout"
        print(f"==== input ran longer than -timeout={timeout}s", file=sys.stderr)
    except Exception:
        kind = "crash"
        print("=== Uncaught Python exception: ===", file=sys.stderr)
        traceback.print_exc()
    else:
        return True
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    path = f"{prefix}{kind}-{hashlib.sha1(data).hexdigest()}"
    Path(path).write_bytes(data)
    print(f"==== Test unit written to {path}", file=sys.stderr)
    return False


def _random_loop(target: Target, argv: list[str]) -> int:
    options, paths = _options(argv)
    timeout = int(options.get("timeout", "10"))
    prefix = options.get("artifact_prefix", "./")
    if paths and all(p.is_file() for p in paths):  # reproduce the given inputs
        return 0 if all(_run_one(target, p.read_bytes(), timeout, prefix) for p in paths) else 1
    seeds = list(_seeds(paths)) or [b""]
    tokens = _read_dict(options.get("dict"))
    rng = random.Random(int(options.get("seed", "1")))
    deadline = time.monotonic() + float(options.get("max_total_time", "20"))
    runs = 0
    for seed in seeds:  # every seed as it is, first
        runs += 1
        if not _run_one(target, seed, timeout, prefix):
            return 1
    while time.monotonic() < deadline:
        runs += 1
        if not _run_one(target, _mutate(rng, rng.choice(seeds), tokens, seeds), timeout, prefix):
            return 1
    print(f"Done {runs} runs (plain mutation loop, no coverage guidance)", file=sys.stderr)
    return 0
