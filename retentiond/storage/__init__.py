"""The storage tree: read it into an inventory, and (later) change it safely."""
