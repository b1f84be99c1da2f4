"""Hypothesis settings for the property tests: see ``profiles.py``."""

from __future__ import annotations

from tests.property import profiles

profiles.load()
