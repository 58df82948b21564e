"""Silences in the state store: add, expire, list. What they do is ``engine.lifecycle``'s.

Imports ``engine.lifecycle`` (the ``Silence`` record), ``store`` and the standard library. A
silence lives in ``state.json`` under ``silences``, so ``check`` from cron and a running
``watch`` see it at their next poll. Expired silences are kept a week for ``silence list
--all``, then dropped at the next change.
"""

from __future__ import annotations

import uuid
from typing import Any

from ugro_health.engine.lifecycle import Silence, load_silences
from ugro_health.store.state import StateStore

KEEP_EXPIRED_S = 7 * 86400.0


def add_silence(
    store: StateStore,
    nodes: tuple[str, ...],
    codes: tuple[str, ...],
    duration_s: float,
    comment: str,
    created_by: str,
    now: float,
) -> Silence:
    """Store a new silence from ``now`` for ``duration_s``; raises ``StoreError``."""
    silence = Silence(
        id=uuid.uuid4().hex[:8],
        nodes=nodes,
        codes=codes,
        starts_at=now,
        ends_at=now + duration_s,
        comment=comment,
        created_by=created_by,
        created_at=now,
    )

    def add(state: dict[str, Any]) -> None:
        silences = _pruned(state, now)
        silences[silence.id] = silence.to_json()

    store.update(add)
    return silence


def expire_silences(store: StateStore, ids: list[str], now: float) -> dict[str, Silence | None]:
    """End the silences ``ids`` now; each id maps to its silence, or None if there is none."""
    found: dict[str, Silence | None] = {}

    def expire(state: dict[str, Any]) -> None:
        silences = _pruned(state, now)
        for sid in ids:
            record = silences.get(sid)
            if not isinstance(record, dict):
                found[sid] = None
                continue
            record["ends_at"] = min(float(record["ends_at"]), now)
            found[sid] = Silence.from_json(record)

    store.update(expire)
    return found


def list_silences(store: StateStore, now: float, include_expired: bool = False) -> list[Silence]:
    """The silences, soonest to end first; active (and not yet started) only, unless
    ``include_expired``."""
    silences = load_silences(store.load(strict=True).state)
    shown = [s for s in silences if include_expired or s.ends_at > now]
    return sorted(shown, key=lambda s: (s.ends_at, s.id))


def _pruned(state: dict[str, Any], now: float) -> dict[str, Any]:
    silences = state.setdefault("silences", {})
    for sid in list(silences):
        record = silences[sid]
        if isinstance(record, dict) and now - float(record.get("ends_at", now)) > KEEP_EXPIRED_S:
            del silences[sid]
    return silences
