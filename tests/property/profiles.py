"""Hypothesis settings profiles of the property tests, loaded by ``conftest.py``.

``ci`` (the default): derandomized, so every run tries the same examples and a failure in CI
reproduces locally; no example database (nothing written to the checkout); no deadline (a
tree is written to disk per example, and 2 shared cores make timings noisy). The example counts
keep the whole property suite under ~90 s on 2 cores. ``deep`` explores new random examples,
ten times as many: ``RETENTIOND_HYPOTHESIS=deep pytest tests/property``.
"""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("RETENTIOND_HYPOTHESIS", "ci")
_SCALE = {"ci": 1, "deep": 10}
_UNHURRIED = [HealthCheck.too_slow, HealthCheck.data_too_large]


#: where each example writes its files: memory when there is a tmpfs (an example writes and
#: removes a tree of a few hundred files; on a shared disk that is most of its time)
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def scratch() -> tempfile.TemporaryDirectory[str]:
    """A temporary directory for one example."""
    return tempfile.TemporaryDirectory(prefix="retentiond-property-", dir=SCRATCH)


def scaled(examples: int) -> int:
    """``examples`` in the ``ci`` profile, ten times as many in ``deep``."""
    return examples * _SCALE.get(PROFILE, 1)


def load() -> None:
    settings.register_profile(
        "ci",
        max_examples=300,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=_UNHURRIED,
    )
    settings.register_profile(
        "deep",
        max_examples=3000,
        deadline=None,
        database=None,
        suppress_health_check=_UNHURRIED,
    )
    settings.load_profile(PROFILE)
