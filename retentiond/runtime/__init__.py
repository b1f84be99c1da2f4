"""How retentiond controls the registry process: docker (SDK) or the operator's commands."""
