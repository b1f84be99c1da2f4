"""Last-pull tracking: the registry's notifications received by ``serve``
(:mod:`~retentiond.pulls.listener`), recorded in SQLite (:mod:`~retentiond.pulls.store`), read
by the planner for ``keep.pulled_within`` (:mod:`retentiond.core.pulls`)."""
