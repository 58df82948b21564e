"""Check every record of a loaded ``state.json`` before anything reads it.

Standard library only (and ``model``, ``summary`` for the names of statuses and metrics).
``state.json`` is valid JSON written by us, normally; but a hand edit, another version or a
disk error can leave a document whose top level is right and a record inside it wrong
(``"nodes": {"gpu1": null}``, ``"status": "bogus"``, ``"polled_at": "yesterday"``,
``"jobs": {"j": "str"}``). Every command reads those records, so each one is checked here,
field by field, against what the writers put there: a record with a wrong field is dropped
whole (a node then reads as never polled, a job as gone), the good records are kept, and one
line says what was dropped. Keys nobody reads are left alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from ugro_health.model import MAX_DURATION_S, Status
from ugro_health.store.summary import METRICS

# Epoch seconds a datetime can show (year 1970 to 9999): a larger one crashes fromtimestamp.
_MAX_EPOCH = 253_402_300_799.0
_STATUSES = frozenset(s.label for s in Status)
_BREAKER_STATES = frozenset({"closed", "open", "half_open"})
_SHOWN = 3  # damaged records named in the warning; the rest are counted

Check = Callable[[Any], bool]


def _null_or(check: Check) -> Check:
    return lambda value: value is None or check(value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _epoch(value: Any) -> bool:
    return _number(value) and 0 <= value <= _MAX_EPOCH


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _list_of(check: Check) -> Check:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def _record(fields: Mapping[str, Check]) -> Check:
    """A JSON object whose listed fields (each optional) pass their check."""

    def check(value: Any) -> bool:
        return isinstance(value, dict) and _bad_field(value, fields) is None

    return check


def _regex(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        re.compile(value)
    except (re.error, RecursionError, OverflowError):
        return False
    return True


_ALERT = _record(
    {
        "severity": _null_or(_text),
        "code": _null_or(_text),
        "message": _null_or(_text),
        "gpu": _null_or(_count),
        "subject": _null_or(_text),
        "value": lambda v: v is None or isinstance(v, str | bool) or _number(v),
        "state": _null_or(_text),
    }
)
_GPU = _record(
    {
        "index": _null_or(_count),
        "name": _null_or(_text),
        "util_pct": _null_or(_number),
        "mem_pct": _null_or(_number),
        "temp_c": _null_or(_number),
        "power_w": _null_or(_number),
    }
)
_SUMMARY = _record(
    {
        "status": _null_or(_text),
        "reachable": _null_or(lambda v: isinstance(v, bool)),
        "skipped": _null_or(lambda v: isinstance(v, bool)),
        "alerts": _null_or(_list_of(_text)),
        **{metric: _null_or(_number) for metric in METRICS},
    }
)
_BREAKER = _record(
    {
        "state": lambda v: isinstance(v, str) and v in _BREAKER_STATES,
        "failures": _null_or(_count),
        "openings": _null_or(_count),
        "opened_at": _null_or(_number),
        "next_try_at": _null_or(_number),
        "closed_at": _null_or(_number),
        "last_error": _null_or(_text),
    }
)
_LIFECYCLE_STATES = frozenset({"pending", "firing", "resolved"})
_TOLD = frozenset({"firing", "flapping"})
_LIFECYCLE = _record(
    {
        "code": _text,
        "gpu": _null_or(_count),
        "subject": _null_or(_text),
        "severity": lambda v: v in ("info", "warning", "critical"),
        "message": _text,
        "value": lambda v: v is None or isinstance(v, str | bool) or _number(v),
        "state": lambda v: isinstance(v, str) and v in _LIFECYCLE_STATES,
        "present": lambda v: isinstance(v, bool),
        "hits": _count,
        "clean": _count,
        "since": _epoch,
        "fired_at": _null_or(_epoch),
        "resolved_at": _null_or(_epoch),
        "changes": _list_of(_epoch),
        "flapping": lambda v: isinstance(v, bool),
        "notified": lambda v: v is None or (isinstance(v, str) and v in _TOLD),
        "notified_at": _null_or(_epoch),
    }
)
# Every key the lifecycle reads: a record without one of them is damaged.
LIFECYCLE_KEYS = (
    "code", "gpu", "subject", "severity", "message", "value", "state", "present", "hits",
    "clean", "since", "fired_at", "resolved_at", "changes", "flapping", "notified", "notified_at",
)  # fmt: skip


def _lifecycle(value: Any) -> bool:
    return isinstance(value, dict) and all(
        _LIFECYCLE(r) and all(k in r for k in LIFECYCLE_KEYS) for r in value.values()
    )


SILENCE_FIELDS: dict[str, Check] = {
    "id": _text,
    "nodes": _list_of(_text),
    "codes": _list_of(_text),
    "starts_at": _epoch,
    "ends_at": _epoch,
    "comment": _null_or(_text),
    "created_by": _null_or(_text),
    "created_at": _null_or(_epoch),
}
_REQUIRED_SILENCE_FIELDS = ("id", "starts_at", "ends_at")

NODE_FIELDS: dict[str, Check] = {
    "status": _null_or(lambda v: isinstance(v, str) and v in _STATUSES),
    "score": _null_or(lambda v: _number(v) and 0 <= v <= 100),
    "reachable": _null_or(lambda v: isinstance(v, bool)),
    "error": _null_or(_text),
    "error_kind": _null_or(_text),
    "alerts": _null_or(_list_of(_ALERT)),
    "polled_at": _null_or(_epoch),
    "last_seen": _null_or(_epoch),
    "metrics": _null_or(lambda v: isinstance(v, dict)),
    "gpus": _null_or(_list_of(_GPU)),
    "summary": _null_or(_SUMMARY),
    "breaker": _null_or(_BREAKER),
    "lifecycle": _null_or(_lifecycle),
}
JOB_FIELDS: dict[str, Check] = {
    "name": _text,
    "nodes": _list_of(_text),
    "started_at": _epoch,
    "ranks": _null_or(lambda v: _count(v) and v >= 1),
    "match": _null_or(_regex),
    "ttl_s": _null_or(lambda v: _number(v) and 0 < v <= MAX_DURATION_S),
    "finished_at": _null_or(_epoch),
    "finish_reason": _null_or(_text),
    "procs_seen_at": _null_or(_epoch),
}
_REQUIRED_JOB_FIELDS = ("name",)  # what every reader of a job looks up


def _bad_field(record: Mapping[str, Any], fields: Mapping[str, Check]) -> str | None:
    for key, check in fields.items():
        if key in record and not check(record[key]):
            return key
    return None


def _node_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return f"not an object ({type(entry).__name__})"
    key = _bad_field(entry, NODE_FIELDS)
    return None if key is None else f"bad {key!r}"


def _job_problem(job: Any) -> str | None:
    if not isinstance(job, dict):
        return f"not an object ({type(job).__name__})"
    missing = [k for k in _REQUIRED_JOB_FIELDS if k not in job]
    if missing:
        return f"no {missing[0]!r}"
    key = _bad_field(job, JOB_FIELDS)
    return None if key is None else f"bad {key!r}"


def _silence_problem(silence: Any) -> str | None:
    if not isinstance(silence, dict):
        return f"not an object ({type(silence).__name__})"
    missing = [k for k in _REQUIRED_SILENCE_FIELDS if k not in silence]
    if missing:
        return f"no {missing[0]!r}"
    key = _bad_field(silence, SILENCE_FIELDS)
    return None if key is None else f"bad {key!r}"


def drop_damaged(state: dict[str, Any]) -> list[str]:
    """Remove from ``state`` (in place) every node and job record with a wrong field.

    Returns one short description per dropped record (``node 'gpu1': bad 'status'``); a bad
    ``updated_at`` is reset to None and reported the same way. The top level (a JSON object of
    version 1 with object ``nodes`` and ``jobs``) is checked by the caller.
    """
    dropped = []
    if not _null_or(_epoch)(state.get("updated_at")):
        state["updated_at"] = None
        dropped.append("'updated_at'")
    sections = (
        ("nodes", _node_problem),
        ("jobs", _job_problem),
        ("silences", _silence_problem),
    )
    dropped.extend(_drop_damaged_lifecycle(state.get("nodes") or {}))
    for section, problem_of in sections:
        records = state[section]
        for name in list(records):
            problem = problem_of(records[name])
            if problem is not None:
                del records[name]
                dropped.append(f"{section[:-1]} {name!r}: {problem}")
    return dropped


def _drop_damaged_lifecycle(nodes: dict[str, Any]) -> list[str]:
    """Drop a node's damaged lifecycle records, not the node: its breaker, its last state and
    its other alerts' records (what channels were told) stay."""
    dropped = []
    for name, entry in nodes.items():
        if not isinstance(entry, dict) or entry.get("lifecycle") is None:
            continue
        records = entry["lifecycle"]
        if not isinstance(records, dict):
            entry["lifecycle"] = {}
            dropped.append(f"node {name!r}: lifecycle not an object")
            continue
        for key in list(records):
            if not _lifecycle({key: records[key]}):
                del records[key]
                dropped.append(f"node {name!r}: lifecycle record {key!r}")
    return dropped


def dropped_line(dropped: list[str]) -> str:
    """``3 damaged record(s) dropped (node 'a': bad 'status', ...)``: one line, bounded."""
    shown = "; ".join(d[:120] for d in dropped[:_SHOWN])
    more = f"; and {len(dropped) - _SHOWN} more" if len(dropped) > _SHOWN else ""
    return f"{len(dropped)} damaged record(s) dropped ({shown}{more})"
