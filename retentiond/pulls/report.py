"""What ``retentiond check`` says about pull tracking: the registry's ``notifications`` section
to paste when ``pulls.listen`` is set, and a warning per policy that keeps tags by
``keep.pulled_within`` while tracking is off (``plan`` refuses its repositories)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from retentiond.config import Config, split_listen
from retentiond.errors import SourceProblem
from retentiond.policy.model import Policy
from retentiond.pulls.listener import PATH

#: blob events carry this media type (the registry stores blobs untyped); manifests their own
BLOB_MEDIA_TYPE = "application/octet-stream"
#: the placeholder for the host when ``pulls.listen`` names every interface
HOST_PLACEHOLDER = "RETENTIOND_HOST"


def endpoint_url(listen: str) -> str:
    host, port = split_listen(listen)
    if host in ("0.0.0.0", "::", ""):
        host = HOST_PLACEHOLDER
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{PATH}"


def notifications_snippet(config: Config) -> list[str]:
    """The lines ``check`` prints: the registry config's ``notifications`` section, and the
    same as one environment variable. The token itself is not printed (check's output may
    end up in a CI log): a placeholder names its file."""
    pulls = config.pulls
    assert pulls.listen is not None
    url = endpoint_url(pulls.listen)
    token = f"<the token in {pulls.token_file}>"
    endpoint = {
        "name": "retentiond",
        "url": url,
        "headers": {"Authorization": [f"Bearer {token}"]},
        "timeout": "5s",
        "threshold": 10,
        "backoff": "10s",
        "ignore": {"mediatypes": [BLOB_MEDIA_TYPE], "actions": ["push", "delete", "mount"]},
    }
    lines = [
        f"pull tracking: listening on {pulls.listen}; add this to the registry's config "
        "(then restart it):",
        "notifications:",
        "  endpoints:",
        "    - name: retentiond",
        f"      url: {url}",
        "      headers:",
        f'        Authorization: ["Bearer {token}"]',
        "      timeout: 5s",
        "      threshold: 10",
        "      backoff: 10s",
        "      ignore:",
        f"        mediatypes: [{BLOB_MEDIA_TYPE}]",
        "        actions: [push, delete, mount]",
        "or as the registry container's environment:",
        f"REGISTRY_NOTIFICATIONS_ENDPOINTS='{json.dumps([endpoint])}'",
    ]
    if HOST_PLACEHOLDER in url:
        lines.append(
            f"({HOST_PLACEHOLDER}: this host's address as the registry reaches it, e.g. the "
            "Docker bridge's gateway 172.17.0.1 for a registry container on this host)"
        )
    return lines


def pulls_report(
    config: Config, policies: Sequence[Policy]
) -> tuple[list[str], list[SourceProblem]]:
    """The lines for stdout and the warnings (located at the policy) of ``check``."""
    if config.pulls.enabled:
        return notifications_snippet(config), []
    warnings = []
    for policy in policies:
        if policy.keep.pulled_within is None:
            continue
        file, _, line = policy.source.rpartition(":")
        warnings.append(
            SourceProblem(
                file or policy.source,
                int(line) if line.isdigit() else 1,
                1,
                f"policy {policy.name!r} keeps tags by keep.pulled_within, but pull tracking "
                "is off (no pulls.listen in the config): plan and serve refuse the "
                "repositories it applies to; set pulls.listen and pulls.token_file",
            )
        )
    return [], warnings
