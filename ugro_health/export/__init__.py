"""Prometheus export: one collector over the latest reports, served by ``watch`` and written as a
textfile by ``check``.

Imports ``model``, ``config`` and prometheus-client, and reads the ``engine``'s monitor (never
``cli`` or ``render``). The front hands the collector a snapshot callable, so a scrape reads what
the monitor already holds and never triggers or waits on a poll.
"""
