"""``retentiond plan``: read the tree, evaluate the policies, show the plan. Changes nothing."""

from __future__ import annotations

import dataclasses
import gc
import json
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from itertools import islice
from json.encoder import encode_basestring_ascii as _string
from pathlib import Path
from typing import Any, TextIO

from retentiond.commands.context import JobContext, load_context
from retentiond.core.plan import make_plan
from retentiond.core.plan_types import ManifestUnlink, Plan, TagDeletion
from retentiond.errors import UsageError
from retentiond.logs import get_logger
from retentiond.policy.selectors import (
    MAX_REPOSITORY_LENGTH,
    Selector,
    SelectorSyntaxError,
    compile_pattern,
)
from retentiond.policy.text import excerpt
from retentiond.protection import read_protection
from retentiond.pulls.store import read_pull_times
from retentiond.render import plan_json, plan_table
from retentiond.storage.reader import read_inventory


def run_plan(
    config_arg: Path | None,
    *,
    as_json: bool = False,
    repositories: list[str] | None = None,
    quiet: bool = False,
) -> int:
    only = repository_filter(repositories)
    ctx = load_context(config_arg)
    log = get_logger(job="plan")
    # The inventory and the plan are millions of objects in no reference cycle; the cyclic
    # collector would walk them over and over as they are made (a fifth of the planning time
    # at 250k tags, more beyond). Reference counting still frees everything.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _run_plan(ctx, log, as_json, only, quiet)
    finally:
        if collecting:
            gc.enable()


def repository_filter(patterns: list[str] | None) -> Selector | None:
    """The ``--repository`` patterns as a selector (the rules of a policy's ``repositories``),
    None without any; UsageError names a pattern that is invalid or refused."""
    if not patterns:
        return None
    for pattern in patterns:
        if not pattern.removeprefix("!").strip():
            raise UsageError(
                f"--repository {excerpt(pattern)}: empty pattern; give a glob like 'ci/**'"
            )
        try:
            compile_pattern(pattern.removeprefix("!"))
        except SelectorSyntaxError as exc:
            raise UsageError(f"--repository {excerpt(pattern)}: {exc}") from exc
    return Selector.parse(patterns, max_length=MAX_REPOSITORY_LENGTH)


def _run_plan(
    ctx: JobContext,
    log: Any,
    as_json: bool,
    only: Selector | None,
    quiet: bool,
) -> int:
    started = time.monotonic()
    line = ProgressLine(sys.stderr, started) if sys.stderr.isatty() else None
    try:
        inventory = read_inventory(
            ctx.config.registry.location, read_created=ctx.needs_created, progress=line
        )
    finally:
        if line:
            line.clear()
    read_seconds = time.monotonic() - started
    pulls = read_pull_times(ctx.config.pulls, ctx.config.state_dir)
    protection = read_protection(ctx.config.protect)  # shown in the plan when unreadable
    plan = make_plan(
        inventory,
        ctx.policies,
        ctx.config.safety,
        datetime.now(UTC),
        pulls=pulls,
        protected=protection,
    )
    if as_json:
        write_plan_json(plan, only, sys.stdout)
    else:
        print(plan_table(plan, only, verbose=not quiet))
    log.info(
        "plan",
        repositories=plan.repositories,
        tags=plan.tags,
        tags_deleted=len(plan.tags_deleted),
        manifests_unlinked=len(plan.manifests_unlinked),
        repositories_removed=len(plan.repositories_removed),
        refused=len(plan.refused),
        problems=len(plan.problems),
        protected_tags=plan.protected_tags,
        protection_problems=list(plan.protection_problems),
        blobs_reclaimed=len(plan.reclaimable),
        bytes_reclaimed=plan.bytes_reclaimed,
        read_seconds=round(read_seconds, 3),
        seconds=round(time.monotonic() - started, 3),
    )
    return 0


class ProgressLine:
    """``reading: 812/2000 repositories, 41s`` on a terminal, rewritten in place (the blob
    store's directories first, then repositories, then ``parsing: ... manifests``)."""

    def __init__(self, out: TextIO, started: float, every: float = 0.25) -> None:
        self.out, self.started, self.every = out, started, every
        self.shown: float | None = None  # when the line was last written

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if self.shown is not None and now - self.shown < self.every and done < total:
            return
        self.shown = now
        verb = "parsing" if stage == "manifests" else "reading"
        self.out.write(f"\r\033[K{verb}: {done}/{total} {stage}, {now - self.started:.0f}s")
        self.out.flush()

    def clear(self) -> None:
        if self.shown is not None:
            self.out.write("\r\033[K")
            self.out.flush()


def write_plan_json(plan: Plan, only: Selector | None, out: TextIO) -> None:
    """Write ``json.dumps(plan_json(plan, only), indent=2)`` and a newline, piece by piece.

    A plan of a million deletions would otherwise exist three times in memory (the plan, a
    dict per entry, the text). The lists of tags and manifests are streamed; everything else
    comes from :func:`~retentiond.render.plan_json` itself.
    """
    doc = plan_json(dataclasses.replace(plan, tags_deleted=(), manifests_unlinked=()), only)
    doc["summary"]["tags_deleted"] = len(plan.tags_deleted)
    doc["summary"]["manifests_unlinked"] = len(plan.manifests_unlinked)

    deleted: Iterable[TagDeletion] = plan.tags_deleted
    unlinked: Iterable[ManifestUnlink] = plan.manifests_unlinked
    if only is not None:  # read once, below: no need to keep what matches
        deleted = (t for t in deleted if only.matches(t.repository))
        unlinked = (m for m in unlinked if only.matches(m.repository))

    # one object per entry, as json.dumps(indent=2) writes it at depth 2; the strings that
    # repeat (repository, policy, reason) are encoded once
    encoded: dict[str, str] = {}

    def enc(text: str) -> str:  # after known(text) found nothing: encode it, once
        encoded[text] = found = _string(text)
        return found

    known = encoded.get
    tag_item = _item("repository", "tag", "digest", "pushed_at", "policy", "reason")
    pulled_item = _item("repository", "tag", "digest", "pushed_at", "policy", "reason", "pulled_at")
    tags = (
        (tag_item if pulled_at is None else pulled_item)
        % (
            known(repository) or enc(repository),
            _string(tag),
            _string(digest),
            _iso(pushed_at),
            known(policy) or enc(policy),
            known(reason) or enc(reason),
            *(() if pulled_at is None else (_iso(pulled_at),)),
        )
        for repository, tag, digest, pushed_at, policy, reason, pulled_at in deleted
    )
    manifest_item = _item("repository", "digest", "reason")
    manifests = (
        manifest_item
        % (known(repository) or enc(repository), _string(digest), known(reason) or enc(reason))
        for repository, digest, reason, _ in unlinked
    )
    streamed = {"tags": tags, "manifests": manifests}
    out.write("{")
    for n, (key, value) in enumerate(doc.items()):
        out.write(("," if n else "") + "\n  " + _string(key) + ": ")
        items = streamed.get(key)
        if items is None:
            out.write(json.dumps(value, indent=2).replace("\n", "\n  "))
        else:
            _write_list(items, out)
    out.write("\n}\n")


def _item(*keys: str) -> str:
    """A %-template of an object of strings in a list at depth 1 (``json.dumps(indent=2)``)."""
    return "    {\n" + ",\n".join(f"      {_string(k)}: %s" for k in keys) + "\n    }"


def _write_list(items: Iterator[str], out: TextIO) -> None:
    """Objects made by :func:`_item`, as ``json.dumps(indent=2)`` lists them, in batches."""
    first = True
    while batch := list(islice(items, 2000)):
        out.write(("[\n" if first else ",\n") + ",\n".join(batch))
        first = False
    out.write("[]" if first else "\n  ]")


def _iso(when: datetime) -> str:
    """:func:`retentiond.render.iso` as a JSON string, several times faster (it runs once per
    deleted tag)."""
    if when.tzinfo is not UTC:
        when = when.astimezone(UTC)
    return '"' + when.isoformat(timespec="seconds")[:19] + 'Z"'
