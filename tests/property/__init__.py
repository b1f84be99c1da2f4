"""Property-based tests (hypothesis): generated trees, policies and YAML."""
