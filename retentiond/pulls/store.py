"""The last pull of each manifest, per repository, in SQLite (``<state_dir>/pulls.sqlite``).

``serve``'s writer thread is the only writer (:class:`PullStore`); ``plan``, ``apply`` and the
daemon's jobs read a snapshot with :func:`read_pull_times`. The table ``meta`` holds when
tracking began (``tracking_since``, written once, at the first start with ``pulls.listen``):
a manifest with no recorded pull counts as pulled then (:mod:`retentiond.core.pulls`).
The database is in WAL mode, so a reader never waits for the writer nor blocks it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from retentiond.core.pulls import PullTimes
from retentiond.errors import StorageError
from retentiond.pulls.settings import PullsConfig

STORE_FILE = "pulls.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pulls (
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    pulled_at REAL NOT NULL,  -- POSIX seconds of the last pull
    pulls INTEGER NOT NULL,   -- pull events recorded
    PRIMARY KEY (repository, digest)
) WITHOUT ROWID;
"""
_UPSERT = """
INSERT INTO pulls (repository, digest, pulled_at, pulls) VALUES (?, ?, ?, ?)
ON CONFLICT (repository, digest) DO UPDATE SET
    pulled_at = max(pulled_at, excluded.pulled_at), pulls = pulls + excluded.pulls
"""


def store_path(state_dir: Path) -> Path:
    return state_dir / STORE_FILE


class PullStore:
    """The writer's connection. Opening it records when tracking began, if not yet known."""

    def __init__(self, state_dir: Path, now: datetime, *, busy_timeout: float = 5.0) -> None:
        """``busy_timeout``: how long a write waits for a reader's lock before it fails (and
        the listener keeps the batch for the next one)."""
        self.path = store_path(state_dir)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            # used by the writer thread after being opened by the thread that starts it
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('tracking_since', ?)",
                (now.astimezone(UTC).isoformat(),),
            )
            self.since = _since(self._db, self.path)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(
                f"cannot open the pull store {self.path}: {exc}; check that state_dir is "
                "writable and the file is not damaged (moving it away restarts tracking)"
            ) from exc

    def record(self, pulls: Mapping[tuple[str, str], tuple[float, int]]) -> None:
        """Record a batch: (repository, digest) -> (last pull in POSIX seconds, events), in one
        transaction. Raises sqlite3.Error (the caller keeps the batch and retries)."""
        rows = [(repo, digest, when, n) for (repo, digest), (when, n) in pulls.items()]
        with self._db:  # one transaction
            self._db.execute("BEGIN")
            self._db.executemany(_UPSERT, rows)

    def close(self) -> None:
        self._db.close()


def _since(db: sqlite3.Connection, path: Path) -> datetime:
    row = db.execute("SELECT value FROM meta WHERE key = 'tracking_since'").fetchone()
    if row is None:
        raise sqlite3.DatabaseError(f"{path} has no tracking_since")
    return datetime.fromisoformat(str(row[0])).astimezone(UTC)


def read_pull_times(config_pulls: PullsConfig, state_dir: Path) -> PullTimes | None:
    """Every recorded last pull, or None when tracking is off or has never started (no store
    yet: ``serve`` with ``pulls.listen`` creates it). StorageError when it cannot be read."""
    if not config_pulls.enabled:
        return None
    path = store_path(state_dir)
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(path, isolation_level=None)
        try:
            since = _since(db, path)
            last: dict[str, dict[str, datetime]] = {}
            for repository, digest, when in db.execute(
                "SELECT repository, digest, pulled_at FROM pulls"
            ):
                last.setdefault(repository, {})[digest] = datetime.fromtimestamp(when, UTC)
        finally:
            db.close()
    except (sqlite3.Error, ValueError) as exc:
        raise StorageError(
            f"cannot read the pull store {path}: {exc}; check its permissions, or move it away "
            "to restart tracking (every manifest then counts as pulled now)"
        ) from exc
    return PullTimes(since, last)


def pull_counts(state_dir: Path) -> dict[tuple[str, str], int]:
    """(repository, digest) -> the pull events recorded (tests, benchmarks)."""
    db = sqlite3.connect(store_path(state_dir))
    try:
        return {
            (r, d): int(n) for r, d, n in db.execute("SELECT repository, digest, pulls FROM pulls")
        }
    finally:
        db.close()
