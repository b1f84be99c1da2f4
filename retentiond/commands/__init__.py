"""One module per command, each a function returning an exit code."""
