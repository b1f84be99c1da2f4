"""retentiond: retention policies and safe garbage collection for a self-hosted Docker registry."""

__version__ = "0.1.0"
