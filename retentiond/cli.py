"""The command line: argument parsing and the one error boundary.

Exit codes: 0 success; 1 the job failed; 2 bad usage, invalid config or policy; 3 internal error;
130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from retentiond import __version__
from retentiond.errors import RetentiondError, UsageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retentiond",
        description="Retention policies and safe garbage collection for a Docker registry.",
    )
    parser.add_argument("--version", action="version", version=f"retentiond {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="config file (default: $RETENTIOND_CONFIG, ./retentiond.yaml, "
        "/etc/retentiond/retentiond.yaml)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="validate the config and policy files; changes nothing")
    check.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="only these policy files (for pre-commit hooks)",
    )

    plan = sub.add_parser("plan", help="show what a maintenance run would delete now, and why")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.add_argument(
        "--repository",
        metavar="GLOB",
        action="append",
        help="show only repositories matching GLOB (repeatable)",
    )
    plan.add_argument(
        "--quiet", "-q", action="store_true", help="table only, without one line per deleted tag"
    )

    verify = sub.add_parser("verify", help="check every tag resolves to a complete image on disk")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")

    apply = sub.add_parser(
        "apply", help="run one maintenance now: freeze, delete, one GC, restart, verify"
    )
    apply.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    apply.add_argument(
        "--dry-run",
        action="store_true",
        help="check and plan, change nothing in the tree or the registry",
    )
    apply.add_argument(
        "--no-gc",
        action="store_true",
        help="remove tags and manifests but do not run the GC (undo stays possible)",
    )
    sub.add_parser("serve", help="the daemon: plan on a schedule, maintain inside windows, "
                   "serve /metrics, /healthz, /readyz, /status")
    undo = sub.add_parser("undo", help="put back what a run removed, until the next GC")
    undo.add_argument("run_id", metavar="RUN_ID")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    config_arg = Path(args.config) if args.config else None
    if args.command == "check":
        from retentiond.commands.check import run_check

        return run_check(config_arg, list(args.paths))
    if args.command == "plan":
        from retentiond.commands.plan import run_plan

        return run_plan(
            config_arg, as_json=args.json, repositories=args.repository, quiet=args.quiet
        )
    if args.command == "verify":
        from retentiond.commands.verify import run_verify

        return run_verify(config_arg, as_json=args.json)
    if args.command == "apply":
        from retentiond.commands.apply import run_apply

        return run_apply(config_arg, yes=args.yes, dry_run=args.dry_run, no_gc=args.no_gc)
    if args.command == "serve":
        from retentiond.commands.serve import run_serve

        return run_serve(config_arg)
    if args.command == "undo":
        from retentiond.commands.undo import run_undo

        return run_undo(config_arg, args.run_id)
    raise UsageError(f"unknown command {args.command}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help is 0, bad usage 2
        return int(exc.code or 0)
    try:
        return _dispatch(args)
    except RetentiondError as exc:
        print(f"retentiond {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # what reads our output stopped reading (`plan --json | head`)
        # stdout goes nowhere from now on, so that the flush at exit does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"retentiond {args.command}: output closed before all was written", file=sys.stderr)
        return 1
    except Exception:
        print(
            f"retentiond {args.command}: internal error (a bug in retentiond; please report it "
            "with the traceback below):",
            file=sys.stderr,
        )
        traceback.print_exc()
        return 3


if __name__ == "__main__":
    sys.exit(main())
