"""What every command that reads the registry needs: the config, its policies, logging."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retentiond.config import Config, find_config_path, load_config
from retentiond.logs import configure_logging
from retentiond.policy.loader import load_policies
from retentiond.policy.model import OrderBy, Policy


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
