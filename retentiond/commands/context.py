"""What every command that reads the registry needs: the config, its policies, logging, and
the registry's HTTP client for the commands that talk to it (``apply``, ``serve``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retentiond.config import Config, find_config_path, load_config, registry_password
from retentiond.logs import configure_logging
from retentiond.policy.loader import load_policies
from retentiond.policy.model import OrderBy, Policy
from retentiond.registry import RegistryClient


@dataclass(frozen=True)
class JobContext:
    config: Config
    policies: tuple[Policy, ...]

    @property
    def needs_created(self) -> bool:
        """True when a policy orders by the image config's ``created`` time."""
        return any(p.order_by is OrderBy.CREATED for p in self.policies)


def load_context(config_arg: Path | None) -> JobContext:
    """Find and load the config and its policies; raises ConfigError with every problem."""
    config = load_config(find_config_path(str(config_arg) if config_arg else None))
    configure_logging(config.log.format.value, config.log.level)
    return JobContext(config, tuple(load_policies(list(config.policies))))


def make_registry_client(ctx: JobContext) -> RegistryClient:
    """The HTTP client of the registry the config names, with its credentials."""
    reg = ctx.config.registry
    password = registry_password(reg)
    auth = (reg.username, password or "") if reg.username else None
    return RegistryClient(reg.url, auth=auth, verify=reg.tls_verify)
