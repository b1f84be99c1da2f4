"""The policy language: model, selectors, YAML loading with positions, validation."""
