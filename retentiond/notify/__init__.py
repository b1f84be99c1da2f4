"""Notifications after a maintenance run: ``notify.webhooks`` in the config.

- :mod:`retentiond.notify.settings`: the ``notify`` section, read and checked like the rest of the
  config (``FILE:LINE:COL`` problems), and the ``headers_file`` format;
- :mod:`retentiond.notify.payload`: the JSON summary of a run (pure: built from its
  :class:`~retentiond.run_records.RunRecord`, the line it appends to ``runs.jsonl``);
- :mod:`retentiond.notify.webhooks`: the adapter that POSTs it, in parallel, within a bounded
  time, logging (and counting, through a callback) every failure and never raising.
"""
