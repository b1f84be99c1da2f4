"""Hostile output streams, manifests and names, through the real CLI (and the real GC).

Output streams: ``retentiond`` is run by bash with stdout on a full disk (``> /dev/full``),
stdout closed (``>&-``) or stderr closed (``2>&-``): exit 1, never a traceback, never 3.
The tree for these is written by hand (what it holds does not matter to them); the hostile
manifests and names are written into trees of real pushed images, and checked against the
registry's own garbage collector.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from retentiond.core.manifests import ManifestError, parse_manifest
from retentiond.core.names import repository_name_problem
from tests.harness.gc import gc_dry_run
from tests.harness.images import OciImage, make_oci_image, push_oci
from tests.harness.registry import RunningRegistry
from tests.harness.tree import repo_dir, set_pushed_at, tag_dir, v2

REPO_ROOT = Path(__file__).resolve().parents[2]
RETENTIOND = REPO_ROOT / ".venv" / "bin" / "retentiond"
TIMEOUT = 120

POLICY = """
    policies:
      - name: last-one
        repositories: ["**"]
        keep: {last: 1}
"""


def write_config(tmp_path: Path, root: Path, policy: str = POLICY) -> Path:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "p.yaml").write_text(textwrap.dedent(policy))
    config = tmp_path / "retentiond.yaml"
    config.write_text(
        f"registry:\n  root: {root}\npolicies: [policies/]\n"
        f"state_dir: {tmp_path / 'state'}\nlog: {{format: json}}\n"
    )
    return config


def shell(config: Path, args: str, redirects: str) -> subprocess.CompletedProcess[str]:
    """``retentiond --config CONFIG ARGS REDIRECTS`` run by bash, with bash's own stdout and
    stderr captured (so a closed stream is closed for retentiond only)."""
    command = f"{shlex.quote(str(RETENTIOND))} --config {shlex.quote(str(config))} {args}"
    return subprocess.run(
        ["bash", "-c", f"{command} {redirects}"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=REPO_ROOT,
    )


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RETENTIOND), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=REPO_ROOT,
    )


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert "internal error" not in result.stderr, result.stderr


# -- a tree written by hand, for the output stream cases ---------------------------------------


def _link(path: Path, digest: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "link").write_text(digest)


def write_blob(root: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    directory = v2(root) / "blobs" / "sha256" / digest[7:9] / digest[7:]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").write_bytes(data)
    return digest


def write_image(root: Path, repo: str, tag: str, image: OciImage) -> None:
    """Store ``image`` as ``repo:tag`` the way the registry lays it out."""
    for data in image.blobs.values():
        write_blob(root, data)
    write_manifest(root, repo, tag, image.manifest)
    for digest in (image.config_digest, *image.layer_digests):
        _link(repo_dir(root, repo) / "_layers" / "sha256" / digest[7:], digest)


def write_manifest(root: Path, repo: str, tag: str, manifest: bytes) -> str:
    """Store ``manifest`` (any bytes) as the manifest ``repo:tag`` names, revision linked."""
    digest = write_blob(root, manifest)
    _link(repo_dir(root, repo) / "_manifests" / "revisions" / "sha256" / digest[7:], digest)
    _link(tag_dir(root, repo, tag) / "current", digest)
    _link(tag_dir(root, repo, tag) / "index" / "sha256" / digest[7:], digest)
    return digest


@pytest.fixture
def many_tags_config(tmp_path: Path) -> Path:
    """A repository of 400 tags, 399 of them deleted by the policy: a plan longer than any
    output buffer, so that a full disk fails at a write, not only at the last flush."""
    root = tmp_path / "root"
    now = datetime.now(UTC)
    image = make_oci_image([b"layer"], seed="many")
    for i in range(400):
        write_image(root, "team/app", f"build-{i:04}", image)
        set_pushed_at(root, "team/app", f"build-{i:04}", now - timedelta(hours=400 - i))
    return write_config(tmp_path, root, POLICY + "        allow_mass_delete: true\n")


def test_plan_to_a_full_disk_exits_1_with_one_line(many_tags_config: Path) -> None:
    result = shell(many_tags_config, "plan", ">/dev/full")
    assert result.returncode == 1, result.stderr
    assert_no_traceback(result)
    assert result.stderr.splitlines()[-1] == (
        "retentiond plan: cannot write to stdout: No space left on device; the output is incomplete"
    )


def test_plan_json_to_a_full_disk_exits_1(many_tags_config: Path) -> None:
    result = shell(many_tags_config, "plan --json", ">/dev/full")
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "No space left on device" in result.stderr.splitlines()[-1]


def test_short_plan_to_a_full_disk_fails_at_the_last_flush_with_exit_1(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_image(root, "team/app", "v1", make_oci_image([b"one"], seed="1"))
    result = shell(write_config(tmp_path, root), "plan -q", ">/dev/full")
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "No space left on device" in result.stderr.splitlines()[-1]


def test_plan_with_stdout_closed_exits_1(many_tags_config: Path) -> None:
    result = shell(many_tags_config, "plan", ">&-")
    assert result.returncode == 1
    assert_no_traceback(result)
    assert result.stderr.splitlines()[-1] == (
        "retentiond plan: cannot write to stdout: stdout is closed; the output is incomplete"
    )


def test_check_with_stdout_closed_exits_1(many_tags_config: Path) -> None:
    result = shell(many_tags_config, "check", ">&-")
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "stdout is closed" in result.stderr


def test_plan_with_stderr_closed_prints_the_plan_and_exits_1(many_tags_config: Path) -> None:
    result = shell(many_tags_config, "plan -q", "2>&-")
    assert result.returncode == 1  # its log line could not be written
    assert "399 of 400 tags deleted" in result.stdout
    assert result.stderr == ""


def test_plan_with_stdout_full_and_stderr_closed_exits_1(many_tags_config: Path) -> None:
    result = shell(many_tags_config, "plan", ">/dev/full 2>&-")
    assert result.returncode == 1
    assert result.stdout == "" and result.stderr == ""


def test_verify_with_both_streams_closed_exits_1(many_tags_config: Path) -> None:
    result = shell(many_tags_config, "verify", ">&- 2>&-")
    assert result.returncode == 1
    assert result.stdout == "" and result.stderr == ""


def test_check_with_stderr_closed_and_nothing_to_say_there_exits_0(
    many_tags_config: Path,
) -> None:
    # no runtime to look at: with kind docker, check would have a warning to write there (the
    # registry container it cannot find), and rightly exit 1 when it cannot
    with many_tags_config.open("a") as config:
        config.write("runtime:\n  kind: none\n")
    result = shell(many_tags_config, "check", "2>&-")
    assert result.returncode == 0
    assert result.stdout.startswith("ok: ")


def test_help_to_a_full_disk_exits_1(tmp_path: Path) -> None:
    result = shell(tmp_path / "none.yaml", "--help", ">/dev/full")
    assert result.returncode == 1
    assert result.stderr == (
        "retentiond: cannot write to stdout: No space left on device; the output is incomplete\n"
    )


def test_bad_usage_with_stderr_closed_still_exits_2(tmp_path: Path) -> None:
    result = shell(tmp_path / "none.yaml", "plan --no-such-option", "2>&-")
    assert result.returncode == 2
    assert result.stdout == "" and result.stderr == ""


# -- hostile manifests in a tree of pushed images ------------------------------------------------


def push_image(registry: RunningRegistry, repo: str, tag: str, seed: str) -> OciImage:
    image = make_oci_image([f"{repo} {seed}".encode()], seed=seed)
    push_oci(registry, repo, tag, image)
    return image


def hostile_variant(image: OciImage, **members: Any) -> bytes:
    """``image``'s manifest with ``members`` set (values are JSON text, inserted verbatim)."""
    doc = json.loads(image.manifest)
    text = json.dumps(doc)[:-1]
    for key, value in members.items():
        text += f', "{key}": {value}'
    return (text + "}").encode()


def with_layer_size(image: OciImage, literal: str) -> bytes:
    doc = json.loads(image.manifest)
    doc["layers"][0]["size"] = "SIZE"
    return json.dumps(doc).replace('"SIZE"', literal).encode()


def plan_json(config: Path) -> dict[str, Any]:
    result = run(config, "plan", "--json")
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    plan: dict[str, Any] = json.loads(result.stdout)
    return plan


@pytest.fixture
def two_repositories(registry: RunningRegistry) -> RunningRegistry:
    """``team/ok`` with two tags (the older one deleted by the policy) and ``team/hostile``
    with one, both pushed."""
    push_image(registry, "team/ok", "v1", "ok1")
    push_image(registry, "team/ok", "v2", "ok2")
    push_image(registry, "team/hostile", "v1", "h1")
    old = datetime.now(UTC) - timedelta(days=2)
    set_pushed_at(registry.root, "team/ok", "v1", old)
    return registry


def assert_refused_alone(plan: dict[str, Any], repository: str) -> None:
    """Only ``repository`` is refused; ``team/ok`` is planned as without it."""
    assert [r["repository"] for r in plan["refused"]] == [repository]
    assert [(t["repository"], t["tag"]) for t in plan["tags"]] == [("team/ok", "v1")]


def test_manifest_nested_1000_deep_pushed_through_the_registry_is_planned_like_any_other(
    two_repositories: RunningRegistry, tmp_path: Path
) -> None:
    registry = two_repositories
    image = push_image(registry, "team/deep", "v1", "deep")
    deep = hostile_variant(image, x="[" * 999 + "]" * 999)
    response = httpx.put(
        f"{registry.url}/v2/team/deep/manifests/v2",
        content=deep,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        timeout=60,
    )
    assert response.status_code == 201, response.text  # the registry's decoder takes it
    plan = plan_json(write_config(tmp_path, registry.root))
    assert plan["refused"] == [] and plan["problems"] == []
    assert not plan["summary"]["gc_blocked"]
    assert {(t["repository"], t["tag"]) for t in plan["tags"]} == {
        ("team/ok", "v1"),
        ("team/deep", "v1"),
    }
    assert gc_dry_run(registry.root).ok


def test_manifest_nested_100000_deep_refuses_only_its_repository_and_blocks_gc(
    two_repositories: RunningRegistry, registry_root_copy: Any, tmp_path: Path
) -> None:
    root = registry_root_copy(two_repositories.root)
    write_manifest(root, "team/hostile", "evil", b"[" * 100_000 + b"]" * 100_000)
    plan = plan_json(write_config(tmp_path, root))
    assert_refused_alone(plan, "team/hostile")
    assert plan["summary"]["gc_blocked"]
    assert any(p["kind"] == "gc-abort" for p in plan["problems"])
    gc = gc_dry_run(root)
    assert not gc.ok and "exceeded max depth" in gc.output


def test_descriptor_size_2_63_refuses_only_its_repository_and_blocks_gc(
    two_repositories: RunningRegistry, registry_root_copy: Any, tmp_path: Path
) -> None:
    root = registry_root_copy(two_repositories.root)
    image = make_oci_image([b"team/hostile h1"], seed="h1")  # as pushed: its blobs are there
    write_manifest(root, "team/hostile", "evil", with_layer_size(image, str(2**63)))
    plan = plan_json(write_config(tmp_path, root))
    assert_refused_alone(plan, "team/hostile")
    assert plan["summary"]["gc_blocked"]
    problem = next(p for p in plan["problems"] if p["repository"] == "team/hostile")
    assert "size" in problem["message"] and problem["kind"] == "gc-abort"
    gc = gc_dry_run(root)
    assert not gc.ok and "cannot unmarshal number 9223372036854775808" in gc.output


def test_nan_in_a_manifest_refuses_only_its_repository_and_blocks_gc(
    two_repositories: RunningRegistry, registry_root_copy: Any, tmp_path: Path
) -> None:
    root = registry_root_copy(two_repositories.root)
    image = make_oci_image([b"team/hostile h1"], seed="h1")
    write_manifest(root, "team/hostile", "evil", hostile_variant(image, x="NaN"))
    plan = plan_json(write_config(tmp_path, root))
    assert_refused_alone(plan, "team/hostile")
    assert plan["summary"]["gc_blocked"]
    gc = gc_dry_run(root)
    assert not gc.ok and "invalid character 'N'" in gc.output


# -- names ----------------------------------------------------------------------------------------


def copy_repository(root: Path, source: str, name: str) -> None:
    shutil.copytree(repo_dir(root, source), repo_dir(root, name), symlinks=True)


def test_repositories_named_upper_and_with_a_space_block_gc_as_the_real_gc_aborts(
    two_repositories: RunningRegistry, registry_root_copy: Any, tmp_path: Path
) -> None:
    root = registry_root_copy(two_repositories.root)
    copy_repository(root, "team/ok", "UPPER")
    copy_repository(root, "team/ok", "sp ace")
    plan = plan_json(write_config(tmp_path, root))
    assert plan["summary"]["gc_blocked"]
    blocking = {p["repository"] for p in plan["problems"] if p["kind"] == "gc-abort"}
    assert blocking == {"UPPER", "sp ace"}
    gc = gc_dry_run(root)
    # the real GC aborts the whole collection at the first one it meets
    assert not gc.ok and "failed to parse repo name" in gc.output
    assert "invalid reference format" in gc.output


GC_NAMES = [
    "UPPER",
    "sp ace",
    "a..b",
    "a___b",
    "-a/b",
    "a/B",
    ".x",
    "x\ny",
    "a:b",
    "host:5000/app",
    "a" * 200 + "/" + "b" * 55,
    "ok/app",
    "Ok/app",
    "Host-1.Ex/app",
    "a--b",
    "a__b",
    "0",
    "a" * 200 + "/" + "b" * 54,
]


def test_gc_aborts_on_exactly_the_repository_names_retentiond_reports(
    registry: RunningRegistry, registry_root_copy: Any
) -> None:
    push_image(registry, "team/app", "v1", "names")
    disagreements = []
    for name in GC_NAMES:
        root = registry_root_copy(registry.root)
        repo_dir(root, name).parent.mkdir(parents=True, exist_ok=True)
        os.rename(repo_dir(root, "team/app"), repo_dir(root, name))
        repo_dir(root, "team").rmdir()
        gc = gc_dry_run(root)
        aborted = not gc.ok and any(
            reason in gc.output
            for reason in ("parse repo name", "must not be more than 255", "invalid path")
        )
        assert gc.ok or aborted, gc.output
        if aborted != (repository_name_problem(name) is not None):
            disagreements.append((name, gc.output[-300:]))
    assert disagreements == []


def test_tag_and_repository_names_with_a_newline_do_not_break_the_plan_table(
    two_repositories: RunningRegistry, registry_root_copy: Any, tmp_path: Path
) -> None:
    root = registry_root_copy(two_repositories.root)
    shutil.copytree(tag_dir(root, "team/ok", "v2"), tag_dir(root, "team/ok", "x\ny"))
    copy_repository(root, "team/ok", "evil\nrepo")
    result = run(write_config(tmp_path, root), "plan")
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "REPOSITORY",
        "TAGS",
        "KEPT",
        "DELETED",
        "UNLINKED",
        "FREED",
        "NOTE",
    ]
    starts = ("team/", "evil\\nrepo ", "  delete ", "refused ", "problem ", "GC blocked")
    for line in lines[1:]:
        assert line == "" or line.startswith(starts) or " tags deleted, " in line, line
    assert any(line.startswith("evil\\nrepo ") for line in lines)
    assert any("x\\ny" in line for line in lines if line.startswith(("refused ", "problem ")))
    assert not any(line in ("y", "repo") or line.startswith(("y ", "repo ")) for line in lines)


# -- the parser against the real GC ---------------------------------------------------------------


def _layer(doc: dict[str, Any], **members: Any) -> dict[str, Any]:
    doc["layers"][0].update(members)
    return doc


def _index_child(**members: Any) -> Any:
    def make(doc: dict[str, Any], root: Path) -> dict[str, Any]:
        child = write_blob(root, json.dumps(doc).encode())
        desc = {"mediaType": doc["mediaType"], "digest": child, "size": 1}
        desc["platform"] = {"architecture": "amd64", "os": "linux"}
        desc.update(members)
        return {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [desc],
        }

    return make


#: hostile variants of a pushed image's manifest (a dict to serialize, or the bytes themselves)
VARIANTS: dict[str, Any] = {
    "size 2^63-1": lambda d, r: _layer(d, size=2**63 - 1),
    "size -1": lambda d, r: _layer(d, size=-1),
    "size null": lambda d, r: _layer(d, size=None),
    "size 2^63": lambda d, r: json.dumps(_layer(d, size="S")).replace('"S"', str(2**63)),
    "size 1.5": lambda d, r: _layer(d, size=1.5),
    "size 11.0": lambda d, r: json.dumps(_layer(d, size="S")).replace('"S"', "11.0"),
    "size 1e1": lambda d, r: json.dumps(_layer(d, size="S")).replace('"S"', "1e1"),
    "size string": lambda d, r: _layer(d, size="11"),
    "size NaN": lambda d, r: json.dumps(_layer(d, size="S")).replace('"S"', "NaN"),
    "unknown field 1e999999": lambda d, r: json.dumps(d)[:-1] + ', "x": 1e999999}',
    "unknown field of 5000 digits": lambda d, r: json.dumps(d)[:-1] + ', "x": ' + "9" * 5000 + "}",
    "unknown field 10,000 deep": lambda d, r: (
        json.dumps(d)[:-1] + ', "x": ' + "[" * 9999 + "]" * 9999 + "}"
    ),
    "unknown field 10,001 deep": lambda d, r: (
        json.dumps(d)[:-1] + ', "x": ' + "[" * 10000 + "]" * 10000 + "}"
    ),
    "invalid UTF-8 in a string": lambda d, r: json.dumps(d).encode()[:-1] + b', "x": "\xff"}',
    "BOM": lambda d, r: b"\xef\xbb\xbf" + json.dumps(d).encode(),
    "LAYERS": lambda d, r: {**d, "LAYERS": []},
    "layer with long s": lambda d, r: {**d, "layer\u017f": []},
    "mediaType null": lambda d, r: {**d, "mediaType": None},
    "layer annotations {a: 1}": lambda d, r: _layer(d, annotations={"a": 1}),
    "layer annotations {a: null}": lambda d, r: _layer(d, annotations={"a": None}),
    "layer urls [1]": lambda d, r: _layer(d, urls=[1]),
    "layer Platform {Architecture: 1}": lambda d, r: _layer(d, Platform={"Architecture": 1}),
    "layer mediaType 5": lambda d, r: _layer(d, mediaType=5),
    "Annotations {a: 1}": lambda d, r: {**d, "Annotations": {"a": 1}},
    "index": _index_child(),
    "index child platform os 1": _index_child(platform={"os": 1}),
    "index child platform []": _index_child(platform=[]),
    "index child platform null": _index_child(platform=None),
    "index child features [1]": _index_child(platform={"features": [1]}),
    "index child size 1.5": _index_child(size=1.5),
}


def test_parser_refuses_exactly_the_hostile_manifests_the_real_gc_aborts_on(
    registry: RunningRegistry, registry_root_copy: Any
) -> None:
    image = push_image(registry, "team/app", "v1", "variants")
    disagreements = []
    for name, make in VARIANTS.items():
        root = registry_root_copy(registry.root)
        variant = make(json.loads(image.manifest), root)
        if isinstance(variant, dict):
            variant = json.dumps(variant)
        data = variant.encode() if isinstance(variant, str) else variant
        write_manifest(root, "team/app", "evil", data)
        try:
            parse_manifest("sha256:" + hashlib.sha256(data).hexdigest(), data)
            refused = False
        except ManifestError as exc:
            refused = exc.gc_aborts
        gc = gc_dry_run(root)
        aborted = not gc.ok and "failed to retrieve manifest" in gc.output
        assert gc.ok or aborted, gc.output
        if refused != aborted:
            disagreements.append((name, refused, gc.output[-200:]))
    assert disagreements == []
