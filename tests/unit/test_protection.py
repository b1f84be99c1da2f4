"""In-use protection (``protect:``): the references, the planner's decision, the files and the
config section. The decision is pure (literal inventories); the files are real files."""

from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent

import pytest

from retentiond.commands.check import run_check
from retentiond.config import check_config, load_config
from retentiond.core.plan import make_plan
from retentiond.core.protection import (
    BadReference,
    ImageReference,
    ProtectedReference,
    Protection,
    ProtectionSource,
    parse_reference,
)
from retentiond.core.values import Tag
from retentiond.policy.model import Safety, Untagged
from retentiond.protection import SourceUnreadable, file_references, read_protection
from retentiond.protection_config import ProtectConfig
from retentiond.render import plan_json, plan_table
from tests.unit.test_plan import NOW, Repo, d, days_ago, image, index, inventory, policy

HEX = "ab" * 32
CONTAINER = "in use by container web on unix:///var/run/docker.sock"


def protect(*lines: str, reason: str = CONTAINER) -> Protection:
    refs = [ProtectedReference(parse_reference(line), reason) for line in lines]
    return Protection(refs, [ProtectionSource("docker", "unix:///var/run/docker.sock", len(refs))])


# ------------------------------------------------------------------------------ references


@pytest.mark.parametrize(
    ("text", "expected", "repositories"),
    [
        (
            f"127.0.0.1:5000/ci/app@sha256:{HEX}",
            ImageReference("127.0.0.1:5000", "ci/app", None, f"sha256:{HEX}"),
            ("ci/app",),
        ),
        (
            "registry.example.com/app:v1.2",
            ImageReference("registry.example.com", "app", "v1.2", None),
            ("app",),
        ),
        (
            f"docker-pullable://localhost/app@sha256:{HEX}",
            ImageReference("localhost", "app", None, f"sha256:{HEX}"),
            ("app",),
        ),
        (  # a tag and a digest: the digest is what is pulled
            f"host:5000/app:v1@sha256:{HEX}",
            ImageReference("host:5000", "app", None, f"sha256:{HEX}"),
            ("app",),
        ),
        ("nginx:1.25", ImageReference(None, "nginx", "1.25", None), ("nginx", "library/nginx")),
        ("reg:5000/app", ImageReference("reg:5000", "app", "latest", None), ("app",)),
        ("team/app:v1", ImageReference(None, "team/app", "v1", None), ("team/app",)),
        (f"  sha256:{HEX}  ", ImageReference(None, None, None, f"sha256:{HEX}"), ()),
    ],
)
def test_references(text: str, expected: ImageReference, repositories: tuple[str, ...]) -> None:
    ref = parse_reference(text)
    assert ref == expected
    assert ref.repositories == repositories


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("host:5000/app:", "is not a tag"),
        ("host:5000/app@sha256:1234", "is not a digest"),
        ("host:5000/App:v1", "is not a repository name"),
        ("host:5000/app:-v1", "is not a tag"),
        ("", "empty reference"),
    ],
)
def test_bad_references_say_why(text: str, why: str) -> None:
    with pytest.raises(BadReference, match=why):
        parse_reference(text)


# ------------------------------------------------------------------------------ the decision


def three_tags() -> Repo:
    return Repo(
        "app",
        (
            Tag("v1", d(1), days_ago(30)),
            Tag("v2", d(2), days_ago(20)),
            Tag("v3", d(3), days_ago(1)),
        ),
        {d(1): days_ago(30), d(2): days_ago(20), d(3): days_ago(1)},
    )


def three_images() -> list:  # type: ignore[type-arg]
    return [image(1, 11, 21), image(2, 12, 22), image(3, 13, 23)]


def test_a_protected_tag_is_kept_despite_a_policy_deleting_it() -> None:
    inv = inventory([three_tags()], three_images())
    unprotected = make_plan(inv, [policy(last=1)], Safety(), NOW)
    assert {t.tag for t in unprotected.tags_deleted} == {"v1", "v2"}

    plan = make_plan(
        inv, [policy(last=1)], Safety(), NOW, protected=protect(f"127.0.0.1:5000/app@{d(1)}")
    )
    assert {t.tag for t in plan.tags_deleted} == {"v2"}  # the neighbour still goes
    assert {m.digest for m in plan.manifests_unlinked} == {d(2)}
    assert d(11) not in plan.reclaimable and d(12) in plan.reclaimable
    [kept] = plan.protected
    assert (kept.repository, kept.tag, kept.digest, kept.policy) == ("app", "v1", d(1), "p")
    assert kept.reason == f"protected: {CONTAINER}"
    assert kept.would_delete == unprotected.tags_deleted[0].reason
    assert plan.protected_tags == 1


def test_protection_is_by_repository_path_whatever_the_host() -> None:
    other = Repo("other", (Tag("v1", d(1), days_ago(30)), Tag("v9", d(9), days_ago(1))), {})
    inv = inventory([three_tags(), other], [*three_images(), image(9, 19)])
    plan = make_plan(
        inv, [policy(last=1)], Safety(), NOW, protected=protect(f"elsewhere.example/app@{d(1)}")
    )
    deleted = {(t.repository, t.tag) for t in plan.tags_deleted}
    assert deleted == {("app", "v2"), ("other", "v1")}  # same digest in another repository


def test_a_child_of_an_index_protects_the_index_and_its_tags() -> None:
    repo = Repo(
        "base",
        (Tag("old", d(100), days_ago(30)), Tag("new", d(200), days_ago(1))),
        {d(100): days_ago(30), d(1): days_ago(30), d(2): days_ago(30), d(200): days_ago(1)},
    )
    manifests = [index(100, 1, 2), image(1, 11, 21), image(2, 12, 22), image(200, 13)]
    inv = inventory([repo], manifests)
    assert {
        m.digest for m in make_plan(inv, [policy(last=1)], Safety(), NOW).manifests_unlinked
    } == {
        d(100),
        d(1),
        d(2),
    }

    plan = make_plan(
        inv, [policy(last=1)], Safety(), NOW, protected=protect(f"reg:5000/base@{d(2)}")
    )
    assert not plan.tags_deleted and not plan.manifests_unlinked and not plan.reclaimable
    # the tag is listed; what it reaches stays with it
    assert [(p.tag, p.digest) for p in plan.protected] == [("old", d(100))]


def test_an_index_digest_protects_its_children() -> None:
    repo = Repo(
        "base",
        (Tag("old", d(100), days_ago(30)), Tag("new", d(200), days_ago(1))),
        {d(100): days_ago(30), d(1): days_ago(30), d(200): days_ago(1)},
    )
    inv = inventory([repo], [index(100, 1), image(1, 11), image(200, 13)])
    plan = make_plan(
        inv, [policy(last=1)], Safety(), NOW, protected=protect(f"reg:5000/base@{d(100)}")
    )
    assert not plan.tags_deleted and not plan.manifests_unlinked


def test_a_protected_untagged_manifest_is_never_unlinked() -> None:
    repo = Repo(
        "app",
        (Tag("v3", d(3), days_ago(1)),),
        {d(1): days_ago(30), d(2): days_ago(20), d(3): days_ago(1)},
    )
    inv = inventory([repo], three_images())
    rules = [policy(untagged=Untagged.DELETE, last=1)]
    plan = make_plan(inv, rules, Safety(), NOW, protected=protect(f"h:1/app@{d(2)}"))
    assert {m.digest for m in plan.manifests_unlinked} == {d(1)}
    [kept] = plan.protected
    assert (kept.tag, kept.digest, kept.policy) == (None, d(2), None)
    assert kept.would_delete.startswith("untagged for more than")


def test_a_tag_named_in_a_file_is_kept(tmp_path: Path) -> None:
    listed = tmp_path / "images.txt"
    listed.write_text("# written by the deploy job\n\n127.0.0.1:5000/app:v2  # api\n")
    protection = read_protection(ProtectConfig(files=(listed,)))
    inv = inventory([three_tags()], three_images())
    plan = make_plan(inv, [policy(last=1)], Safety(), NOW, protected=protection)
    assert {t.tag for t in plan.tags_deleted} == {"v1"}
    assert [(p.tag, p.reason) for p in plan.protected] == [("v2", f"protected: listed in {listed}")]
    doc = plan_json(plan)
    assert doc["summary"]["protected_tags"] == 1 and doc["summary"]["protected_kept"] == 1
    assert doc["protected"][0]["tag"] == "v2"
    assert doc["protection"] == {
        "available": True,
        "protected_tags": 1,
        "sources": [{"kind": "file", "source": str(listed), "references": 1, "error": None}],
    }
    json.dumps(doc)
    assert f"keep app:v2 (protected: listed in {listed}; p:" in plan_table(plan)


def test_a_bare_digest_protects_it_in_every_repository() -> None:
    other = Repo("other", (Tag("v1", d(1), days_ago(30)), Tag("v9", d(9), days_ago(1))), {})
    inv = inventory([three_tags(), other], [*three_images(), image(9, 19)])
    plan = make_plan(inv, [policy(last=1)], Safety(), NOW, protected=protect(d(1)))
    assert {(t.repository, t.tag) for t in plan.tags_deleted} == {("app", "v2")}
    assert plan.protected_tags == 2


def test_protected_tags_are_counted_where_no_policy_applies() -> None:
    inv = inventory([three_tags()], three_images())
    plan = make_plan(
        inv, [], Safety(), NOW, protected=protect(f"reg:5000/app@{d(3)}", "reg:5000/app:v1")
    )
    assert plan.protected_tags == 2 and not plan.protected


def test_an_unreadable_source_is_in_the_plan(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    protection = read_protection(ProtectConfig(files=(missing,)))
    assert not protection.available
    plan = make_plan(
        inventory([three_tags()], three_images()), [], Safety(), NOW, protected=protection
    )
    assert plan.protection_problems == (
        f"file {missing}: {missing} does not exist: the job "
        "that writes it has not run, or the path is wrong",
    )
    assert plan_json(plan)["protection"]["available"] is False
    assert "PROTECTION UNAVAILABLE" in plan_table(plan)


# ------------------------------------------------------------------------------------ files


def test_a_file_with_a_bad_line_is_unreadable(tmp_path: Path) -> None:
    listed = tmp_path / "images.txt"
    listed.write_text(f"h/app@sha256:{HEX}\nh/App:v1\n")
    with pytest.raises(
        SourceUnreadable, match=rf"{listed}:2: 'h/App:v1' is not an image reference"
    ):
        file_references(listed)


def test_a_directory_is_not_a_file_of_references(tmp_path: Path) -> None:
    with pytest.raises(SourceUnreadable, match="is not a regular file"):
        file_references(tmp_path)


def test_kubectl_image_ids(tmp_path: Path) -> None:
    listed = tmp_path / "pods.txt"
    listed.write_text(
        f"docker-pullable://registry.example.com/app@sha256:{HEX}\n"
        f"registry.example.com/app@sha256:{HEX}\n"
        "\n"
    )
    refs = file_references(listed)
    assert {r.reference for r in refs} == {
        ImageReference("registry.example.com", "app", None, f"sha256:{HEX}")
    }


def test_an_unreachable_docker_host_is_a_source_problem() -> None:
    protection = read_protection(ProtectConfig(docker_hosts=("unix:///nonexistent.sock",)))
    assert not protection.available
    [problem] = protection.problems
    assert problem.startswith("docker unix:///nonexistent.sock: cannot ")
    assert "the Docker daemon does not answer there" in problem


# ------------------------------------------------------------------------------------ config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "retentiond.yaml"
    path.write_text(dedent(text))
    return path


def test_the_protect_section_is_read(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """\
            protect:
              docker_hosts: [unix:///var/run/docker.sock, "tcp://build-1:2375"]
              files: [deploy/images.txt, /abs/pods.txt]
            """,
        )
    )
    assert config.protect == ProtectConfig(
        ("unix:///var/run/docker.sock", "tcp://build-1:2375"),
        (tmp_path / "deploy/images.txt", Path("/abs/pods.txt")),
    )
    assert load_config(write(tmp_path, "protect:\n")).protect == ProtectConfig()
    assert not ProtectConfig().enabled


def test_protect_problems_are_located(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        protect:
          docker_hosts:
            - ssh://build-1
            - unix://relative.sock
            - tcp://
            - 5
          files: images.txt
          file: [x]
        """,
    )
    found = [str(p).removeprefix(f"{path}:") for p in check_config(path).problems]
    assert found == [
        "3:7: protect.docker_hosts: 'ssh://build-1': the scheme must be one of unix, tcp "
        "(unix:///var/run/docker.sock or tcp://HOST:2375)",
        "4:7: protect.docker_hosts: 'unix://relative.sock': write a socket as "
        "unix:///absolute/path, e.g. unix:///var/run/docker.sock",
        "5:7: protect.docker_hosts: 'tcp://': write tcp://HOST:PORT, e.g. tcp://build-1:2375",
        "6:7: protect.docker_hosts entry must be a string, got 5; quote it",
        "7:10: protect.files must be a list of strings, e.g. [/run/deploy/images.txt]",
        "8:3: unknown key 'file' in protect; did you mean 'files'?",
    ]


def test_check_reports_each_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "images.txt").write_text(f"h/app@sha256:{HEX}\nh/app\n")
    path = write(
        tmp_path,
        """\
        runtime: {kind: none}
        protect:
          files: [images.txt, missing.txt]
        """,
    )
    assert run_check(path, []) == 0
    out, err = capsys.readouterr()
    assert f"protect: file {tmp_path / 'images.txt'}: 2 references" in out
    assert f"warning: protect: file {tmp_path / 'missing.txt'}: " in err
    assert "no maintenance deletes anything" in err


def test_the_gauge_follows_the_plan() -> None:
    from prometheus_client import CollectorRegistry

    from retentiond.metrics import Metrics

    registry = CollectorRegistry()
    metrics = Metrics(registry, clock=lambda: 0.0)
    inv = inventory([three_tags()], three_images())
    plan = make_plan(inv, [policy(last=1)], Safety(), NOW, protected=protect(f"r:1/app@{d(1)}"))
    metrics.observe_plan(plan, 3, 0, 0, 1.0)
    assert registry.get_sample_value("retentiond_protected_tags") == 1
    metrics.observe_window_skipped("protection_unavailable")
    skipped = {"reason": "protection_unavailable"}
    assert registry.get_sample_value("retentiond_windows_skipped_total", skipped) == 1
