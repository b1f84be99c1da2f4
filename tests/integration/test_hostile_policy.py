"""Hostile config and policy files and patterns, through the real command line.

Each scenario runs ``retentiond`` as a subprocess with a timeout, so a hang fails the test
instead of hanging CI, and asserts what a user sees: the exit code, one line per problem
(``FILE:LINE:COL: message``), and that no more than a short excerpt of any file's content
appears in the output.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30
SECRET = "s3cr3t-" + "".join(f"{i:03d}" for i in range(65))  # 202 characters, no repetition
GOOD_POLICY = "policies:\n  - {name: NAME, repositories: ['ci/**'], keep: {last: 3}}\n"
PROBLEM_LINE = re.compile(r"^.+:\d+:\d+: .+$")


def retentiond(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RETENTIOND_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "retentiond", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=TIMEOUT,
        env=env,
    )


def problem_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The FILE:LINE:COL lines of ``check``; every other stderr line is its summary."""
    lines = result.stderr.splitlines()
    assert lines and re.fullmatch(r"\d+ problems? found", lines[-1]), result.stderr
    for line in lines[:-1]:
        assert PROBLEM_LINE.match(line), line
    assert "Traceback" not in result.stderr
    return lines[:-1]


def assert_no_leak(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert SECRET[40:] not in output
    assert SECRET[45:60] not in output


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def config_for(tmp_path: Path, extra: str = "") -> Path:
    return write(
        tmp_path / "retentiond.yaml",
        f"registry: {{root: {tmp_path / 'registry'}}}\npolicies: [policies/]\n"
        f"state_dir: {tmp_path / 'state'}\n{extra}",
    )


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    for prev, name in zip("abcdef", "bcdefg", strict=True)
)


# ---------------------------------------------------------------- files that are not files


def test_policy_symlink_to_a_secret_file_echoes_only_an_excerpt(tmp_path: Path) -> None:
    secret = write(tmp_path / "outside" / "key", SECRET + "\n")
    link = tmp_path / "policies" / "evil.yaml"
    link.parent.mkdir()
    link.symlink_to(secret)
    result = retentiond("check", str(link))
    assert result.returncode == 2
    (line,) = problem_lines(result)
    assert line.startswith(f"{link}:1:1: the policy file must be a mapping, got 's3cr3t-")
    assert_no_leak(result)


def test_secret_as_a_key_or_value_is_quoted_as_an_excerpt(tmp_path: Path) -> None:
    policy = write(
        tmp_path / "p.yaml",
        f"{SECRET}: 1\npolicies:\n  - name: p\n    repositories: ['{SECRET}', 're:({SECRET}']\n"
        f"    keep: {{within: '{SECRET}', last: {SECRET.replace('s3cr3t-', '9')}}}\n",
    )
    result = retentiond("check", str(policy))
    assert result.returncode == 2
    assert len(problem_lines(result)) == 4
    assert_no_leak(result)
    assert SECRET.replace("s3cr3t-", "9")[45:] not in result.stderr


def test_config_symlink_to_a_secret_file_echoes_only_an_excerpt(tmp_path: Path) -> None:
    secret = write(tmp_path / "outside" / "key", SECRET + "\n")
    link = tmp_path / "retentiond.yaml"
    link.symlink_to(secret)
    result = retentiond("--config", str(link), "check")
    assert result.returncode == 2
    assert problem_lines(result)
    assert_no_leak(result)


def test_configmap_style_symlinks_still_work(tmp_path: Path) -> None:
    """A Kubernetes ConfigMap volume: each file is a link through ``..data`` to a hidden dir."""
    mount = tmp_path / "policies"
    write(mount / "..2026_12_01" / "ci.yaml", GOOD_POLICY.replace("NAME", "ci"))
    (mount / "..data").symlink_to("..2026_12_01")
    (mount / "ci.yaml").symlink_to("..data/ci.yaml")
    config = config_for(tmp_path)
    result = retentiond("--config", str(config), "check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok: config {config}, 1 policy in 1 file")


def test_fifo_as_policy_file_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "p.yaml"
    os.mkfifo(fifo)
    result = retentiond("check", str(fifo))
    assert result.returncode == 2
    assert problem_lines(result) == [
        f"{fifo}:1:1: policy file is a FIFO (named pipe), not a regular file; pass the path of"
        " the policy file itself"
    ]


def test_fifo_in_a_policy_directory_is_reported_not_skipped(tmp_path: Path) -> None:
    write(tmp_path / "policies" / "good.yaml", GOOD_POLICY.replace("NAME", "good"))
    os.mkfifo(tmp_path / "policies" / "pipe.yaml")
    result = retentiond("--config", str(config_for(tmp_path)), "check")
    assert result.returncode == 2
    (line,) = problem_lines(result)
    assert line.startswith(f"{tmp_path / 'policies' / 'pipe.yaml'}:1:1: policy file is a FIFO")


def test_dev_zero_as_policy_file_is_refused(tmp_path: Path) -> None:
    result = retentiond("check", "/dev/zero")
    assert result.returncode == 2
    assert problem_lines(result) == [
        "/dev/zero:1:1: policy file is a character device, not a regular file; pass the path of"
        " the policy file itself"
    ]


def test_policy_file_over_one_mebibyte_is_refused_with_the_limit(tmp_path: Path) -> None:
    big = write(tmp_path / "big.yaml", "# " + "x" * (1024 * 1024) + "\n")
    result = retentiond("check", str(big))
    assert result.returncode == 2
    assert problem_lines(result) == [
        f"{big}:1:1: policy file is larger than 1 MiB, the most retentiond reads; split it into"
        " several files"
    ]


def test_config_option_naming_a_directory_says_it_is_one(tmp_path: Path) -> None:
    result = retentiond("--config", str(tmp_path), "check")
    assert result.returncode == 2
    assert result.stderr == (
        f"error: --config {tmp_path} is a directory; pass the config file itself,"
        f" e.g. --config {tmp_path / 'retentiond.yaml'}\n"
    )


def test_config_option_naming_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "retentiond.yaml"
    os.mkfifo(fifo)
    result = retentiond("--config", str(fifo), "plan")
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        "is a FIFO (named pipe), not a regular file; pass the config file itself"
    )
    assert len(result.stderr.splitlines()) == 1


# ---------------------------------------------------------------- YAML bombs


def test_yaml_alias_bomb_in_a_policy_file_is_refused_quickly(tmp_path: Path) -> None:
    bomb = write(tmp_path / "bomb.yaml", ALIAS_BOMB)
    started = time.monotonic()
    result = retentiond("check", str(bomb))
    assert time.monotonic() - started < 10
    assert result.returncode == 2
    (line,) = problem_lines(result)
    assert "aliases (*name) copy more than 10000 values" in line


def test_yaml_alias_bomb_in_the_config_is_refused_quickly(tmp_path: Path) -> None:
    write(tmp_path / "policies" / "p.yaml", GOOD_POLICY.replace("NAME", "p"))
    config = write(tmp_path / "retentiond.yaml", ALIAS_BOMB)
    result = retentiond("--config", str(config), "plan")
    assert result.returncode == 2
    assert "aliases (*name) copy more than 10000 values" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_yaml_nested_500_deep_is_refused(tmp_path: Path) -> None:
    deep = write(tmp_path / "deep.yaml", "policies: " + "[" * 500 + "]" * 500 + "\n")
    result = retentiond("check", str(deep))
    assert result.returncode == 2
    assert problem_lines(result) == [
        f"{deep}:1:74: nested more than 64 levels deep (lists and mappings inside each other);"
        " flatten the structure"
    ]


def test_config_nested_500_deep_is_refused(tmp_path: Path) -> None:
    config = write(tmp_path / "retentiond.yaml", "log: " + "[" * 500 + "]" * 500 + "\n")
    result = retentiond("--config", str(config), "check")
    assert result.returncode == 2
    (line,) = problem_lines(result)
    assert "nested more than 64 levels deep" in line


# ---------------------------------------------------------------- values out of range


def test_keep_within_beyond_100_years_is_refused(tmp_path: Path) -> None:
    policy = write(
        tmp_path / "p.yaml",
        "policies:\n  - {name: p, repositories: ['**'], keep: {within: 99999999999d}}\n",
    )
    result = retentiond("check", str(policy))
    assert result.returncode == 2
    assert problem_lines(result) == [
        f"{policy}:2:52: keep.within: duration '99999999999d' is longer than 100 years"
        " (36500d), the most retentiond accepts"
    ]


def test_config_durations_beyond_100_years_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "policies" / "p.yaml", GOOD_POLICY.replace("NAME", "p"))
    config = config_for(
        tmp_path,
        "schedule: {plan_every: 99999999999999999999w, window_length: 36501d}\n"
        "safety: {untagged_min_age: 5300w, grace: 3153600001s}\n",
    )
    result = retentiond("--config", str(config), "check")
    assert result.returncode == 2
    lines = problem_lines(result)
    assert len(lines) == 4
    assert all("is longer than 100 years (36500d)" in line for line in lines)


# ---------------------------------------------------------------- patterns


def build_tree(root: Path, repository: str, tags: list[str]) -> None:
    """A registry storage tree: one image (config and one layer), every tag on it."""
    v2 = root / "docker" / "registry" / "v2"

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        write_bytes(v2 / "blobs" / "sha256" / digest[:2] / digest / "data", data)
        return digest

    config = blob(b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}')
    layer = blob(b"layer")
    manifest = blob(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": 64,
                    "digest": f"sha256:{config}",
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": 5,
                        "digest": f"sha256:{layer}",
                    }
                ],
            }
        ).encode()
    )
    repo = v2 / "repositories" / repository
    for digest in (config, layer):
        write(repo / "_layers" / "sha256" / digest / "link", f"sha256:{digest}")
    write(repo / "_manifests" / "revisions" / "sha256" / manifest / "link", f"sha256:{manifest}")
    for tag in tags:
        tag_dir = repo / "_manifests" / "tags" / tag
        write(tag_dir / "current" / "link", f"sha256:{manifest}")
        write(tag_dir / "index" / "sha256" / manifest / "link", f"sha256:{manifest}")


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_glob_with_many_stars_matches_128_character_tags_in_linear_time(tmp_path: Path) -> None:
    """Backtracking took 20 s per tag for this glob; 409 s with one more ``*a``."""
    build_tree(tmp_path / "registry", "ci/app", ["a" * 128, "a" * 127 + "b", "a" * 126, "b" * 128])
    write(
        tmp_path / "policies" / "p.yaml",
        "policies:\n  - name: p\n    repositories: ['ci/**']\n"
        "    tags: ['*a*a*a*a*a*b', '*a*a*a*a*a*a*b', 'a*a*a?a*a**a*a*a*a*b*']\n"
        "    keep: {}\n    allow_empty: true\n    allow_mass_delete: true\n",
    )
    config = config_for(tmp_path)
    assert retentiond("--config", str(config), "check").returncode == 0
    result = retentiond("--config", str(config), "plan", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["summary"]["tags"] == 4
    assert [t["tag"] for t in plan["tags"]] == ["a" * 127 + "b"]


def test_catastrophic_regex_is_refused_by_check_with_a_rewrite(tmp_path: Path) -> None:
    policy = write(
        tmp_path / "p.yaml",
        "policies:\n  - name: p\n    repositories: ['**']\n"
        "    tags: ['re:(a+)+b', 're:.*a.*a.*a.*b', 're:(?P<x>a+)(?P=x)']\n"
        "    keep: {tags: ['re:v\\d+(\\.\\d+){0,2}', 're:.*-rc.*']}\n",
    )
    result = retentiond("check", str(policy))
    assert result.returncode == 2
    lines = problem_lines(result)
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"{policy}:4:12",
        f"{policy}:4:25",
        f"{policy}:4:44",
    ]
    assert "regex '(a+)+b' refused: a repeated part" in lines[0]
    assert "e.g. a+ instead of (a+)+" in lines[0]
    assert "grow" in lines[1] and "[^-]*-[^-]*-.*" in lines[1]
    assert "backreferences" in lines[2]


def test_catastrophic_regex_stops_plan_at_load_time(tmp_path: Path) -> None:
    (tmp_path / "registry").mkdir()
    write(
        tmp_path / "policies" / "p.yaml",
        "policies:\n  - {name: p, repositories: ['re:(a|a)*'], keep: {last: 1}}\n",
    )
    result = retentiond("--config", str(config_for(tmp_path)), "plan")
    assert result.returncode == 2
    assert "regex '(a|a)*' refused" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("re:(", "--repository 're:(': invalid regex '(': missing ), unterminated subpattern"),
        ("re:(a+)+b", "--repository 're:(a+)+b': regex '(a+)+b' refused: a repeated part"),
        ("!", "--repository '!': empty pattern; give a glob like 'ci/**'"),
    ],
)
def test_invalid_or_unsafe_repository_filter_is_a_usage_error(
    tmp_path: Path, pattern: str, message: str
) -> None:
    (tmp_path / "registry").mkdir()
    write(tmp_path / "policies" / "p.yaml", GOOD_POLICY.replace("NAME", "p"))
    result = retentiond("--config", str(config_for(tmp_path)), "plan", "--repository", pattern)
    assert result.returncode == 2
    assert result.stderr.startswith(f"retentiond plan: error: {message}")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "policies").glob("*.yaml")), ids=str)
def test_example_policies_still_pass_check(path: Path) -> None:
    result = retentiond("check", str(path))
    assert result.returncode == 0, result.stderr


def test_readme_policy_example_still_passes_check(tmp_path: Path) -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    examples = [
        block
        for block in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)
        if block.lstrip().startswith("# policies/")
    ]
    assert examples
    for n, example in enumerate(examples):
        policy = write(tmp_path / f"example-{n}.yaml", example)
        result = retentiond("check", str(policy))
        assert result.returncode == 0, result.stderr


def test_symlink_loops_among_policy_files_are_problems_not_crashes(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "x.yaml").symlink_to("y.yaml")
    (policies / "y.yaml").symlink_to("x.yaml")
    result = retentiond("check", str(policies), str(policies / "x.yaml"))
    assert result.returncode == 2
    assert problem_lines(result) == [
        f"{policies / 'x.yaml'}:1:1: a symbolic link to nothing (its target is missing, or a"
        " loop of links)",
        f"{policies / 'x.yaml'}:1:1: cannot read policy file: Too many levels of symbolic links",
        f"{policies / 'y.yaml'}:1:1: cannot read policy file: Too many levels of symbolic links",
    ]
