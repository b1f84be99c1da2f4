"""Running external programs (docker, skopeo, docker-registry) with useful failures."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence

DEFAULT_TIMEOUT = 120.0


class CommandError(RuntimeError):
    """A command exited non-zero; the message holds the command and its output."""

    def __init__(self, cmd: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"command failed with exit code {returncode}: {' '.join(cmd)}\n"
            f"--- stdout ---\n{stdout.strip()}\n--- stderr ---\n{stderr.strip()}"
        )


def run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` and capture its output as text; raise CommandError on failure if ``check``."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.run(
        list(cmd),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd,
        input=input_text,
        check=False,
    )
    if check and proc.returncode != 0:
        raise CommandError(cmd, proc.returncode, proc.stdout, proc.stderr)
    return proc


def docker(
    *args: str,
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI. The legacy builder is forced: Debian's docker.io has no buildx."""
    return run(
        ["docker", *args],
        check=check,
        timeout=timeout,
        cwd=cwd,
        env={"DOCKER_BUILDKIT": "0", "DOCKER_CLI_HINTS": "false"},
    )


def skopeo(
    *args: str, check: bool = True, timeout: float = DEFAULT_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run skopeo (its own policy.json comes with Debian's containers-common)."""
    return run(["skopeo", *args], check=check, timeout=timeout)
