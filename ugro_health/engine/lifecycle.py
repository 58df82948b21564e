"""The alert lifecycle: pending, firing, resolved; flapping; repeats; what channels must hear.

Imports ``model``, ``config_notify`` (the rules), ``notify.base`` (the notices it yields) and the
standard library. Pure: ``advance()`` changes the lifecycle records kept in the state document
(``state["nodes"][name]["lifecycle"]``) from one poll's reports and returns the notices to
send; the caller does it inside the state store's locked update, so ``watch`` and every cron
``check`` share one lifecycle and a notice is decided once.

Per alert (keyed by node, code, GPU and subject):
- it is *pending* while it has held for fewer consecutive polls than ``fire_after`` for its
  severity, then *firing*; a firing alert *resolves* after ``resolve_after`` consecutive clean
  polls (hysteresis). A node that was not sampled (unreachable, isolated, not polled) gives no
  verdict on its other alerts: unknown is not healthy, so they neither count down nor resolve;
  a node its breaker skipped gives none on any (not even on its being unreachable).
- each raw change (raised, cleared) is remembered for ``flap_window_s``; more than
  ``flap_changes`` of them and the alert is *flapping* until they fall to half that.
- what the channels should know is reconciled with what they were last told (``notified``):
  firing, flapping, or nothing. A change is one notice; a flapping alert gets one "flapping"
  notice and then nothing until it is stable again, when its settled state (firing, or
  resolved) is told; a firing alert is repeated every ``repeat_interval_s``. A silenced alert
  is not told at all, and is told once its silence ends if it still fires. An alert that
  blinks without ever holding for ``fire_after`` is no alert: its flapping is not told.
- nor does an alert about a GPU missing from the sample, or about a mount it could not read.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ugro_health.config_notify import AlertRules
from ugro_health.model import Alert, ErrorKind, NodeReport
from ugro_health.notify.base import EVENT_CODES, FIRING, FLAPPING, RESOLVED, AlertNotice

PENDING = "pending"
SILENCED = "silenced"
# Not conditions of the node: breaker transitions are events (the node's reachability is told
# by node_unreachable), a run that ran out of time says nothing about the node, and a
# sub-check that cannot run (dmesg without rights) is a standing note.
IGNORED_CODES = frozenset({"node_isolated", "node_recovered", "node_not_polled", "probe_partial"})
# The alerts of a node that yielded no sample: judged even when nothing else is.
NO_SAMPLE_CODES = frozenset({"node_unreachable", "probe_failed", "probe_invalid"})
# The alerts about a mount that say it could not be read: judged whether or not it was.
UNREAD_DISK_CODES = frozenset({"disk_check_failed", "mount_missing"})
MAX_CHANGES = 64  # raw changes remembered per alert (more than any sane flap_changes)


def alert_key(code: str, gpu: int | None, subject: str | None) -> str:
    # An unreachable node's subject is the failure's kind (timeout, refused...): the same
    # outage whichever way the connection fails this time.
    if code in NO_SAMPLE_CODES:
        subject = None
    return f"{code}|{'' if gpu is None else gpu}|{subject or ''}"


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    nodes: tuple[str, ...]  # globs; empty: every node
    codes: tuple[str, ...]  # globs; empty: every code
    starts_at: float
    ends_at: float
    comment: str = ""
    created_by: str = ""
    created_at: float = 0.0

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, node: str, code: str) -> bool:
        return (not self.nodes or any(fnmatch.fnmatchcase(node, g) for g in self.nodes)) and (
            not self.codes or any(fnmatch.fnmatchcase(code, g) for g in self.codes)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "nodes": list(self.nodes),
            "codes": list(self.codes),
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "comment": self.comment,
            "created_by": self.created_by,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Silence:
        return cls(
            id=str(data["id"]),
            nodes=tuple(str(g) for g in data.get("nodes") or ()),
            codes=tuple(str(g) for g in data.get("codes") or ()),
            starts_at=float(data["starts_at"]),
            ends_at=float(data["ends_at"]),
            comment=str(data.get("comment") or ""),
            created_by=str(data.get("created_by") or ""),
            created_at=float(data.get("created_at") or 0.0),
        )


def load_silences(state: Mapping[str, Any]) -> list[Silence]:
    out = []
    for record in (state.get("silences") or {}).values():
        try:
            out.append(Silence.from_json(record))
        except (KeyError, TypeError, ValueError):
            continue  # state_check drops damaged records; this is a second guard
    return out


def silenced(silences: Iterable[Silence], node: str, code: str, now: float) -> bool:
    return any(s.active(now) and s.matches(node, code) for s in silences)


@dataclass(slots=True)
class Outcome:
    """What one ``advance()`` decided: the notices, and each current alert's shown state."""

    notices: list[AlertNotice] = field(default_factory=list)
    states: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> key -> state


def advance(
    state: dict[str, Any],
    reports: Iterable[NodeReport],
    rules: AlertRules,
    now: float,
) -> Outcome:
    """Feed one poll's ``reports`` into the lifecycle records of ``state`` (in place)."""
    silences = load_silences(state)
    nodes = state.setdefault("nodes", {})
    outcome = Outcome()
    for report in reports:
        if report.error is not None and report.error.kind is ErrorKind.NOT_POLLED:
            continue  # nothing was learnt about the node
        entry = nodes.setdefault(report.name, {})
        records = entry.get("lifecycle")
        if not isinstance(records, dict):
            records = entry["lifecycle"] = {}
        # Isolated by its breaker (watch): skipped, not polled. Its stand-in report says
        # node_unreachable whatever the node last failed with, so judging it would resolve
        # a probe_failed that nobody looked at: its alerts stay as they were.
        if report.error is None or report.error.kind is not ErrorKind.SKIPPED:
            _observe(records, report, rules, now)
        outcome.notices.extend(_events(report, silences, now))
        for key, record in list(records.items()):
            notice = _reconcile(report.name, record, rules, silences, now)
            if notice is not None:
                outcome.notices.append(notice)
            if _finished(record, rules, now):
                del records[key]
        outcome.states[report.name] = {
            key: shown_state(report.name, record, silences, now) for key, record in records.items()
        }
    return outcome


def _events(report: NodeReport, silences: list[Silence], now: float) -> list[AlertNotice]:
    return [
        AlertNotice(
            report.name,
            a.code,
            a.severity.value,
            a.message,
            FIRING,
            now,
            now,
            a.value,
            a.gpu,
            a.subject,
        )
        for a in report.alerts
        if a.code in EVENT_CODES
        and not any(s.active(now) and s.matches(report.name, a.code) for s in silences)
    ]


def _observe(records: dict[str, Any], report: NodeReport, rules: AlertRules, now: float) -> None:
    present = {
        alert_key(a.code, a.gpu, a.subject): a
        for a in report.alerts
        if a.code not in IGNORED_CODES and a.code not in EVENT_CODES
    }
    # A node with more alerts than a report carries (scoring's cap) left some out: absent
    # is then not clean.
    sampled = report.sample is not None and not any(
        a.code == "alerts_truncated" for a in report.alerts
    )
    for key, alert in present.items():
        record = records.get(key)
        if record is None:
            record = records[key] = _new_record(alert, now)
        elif not record["present"]:
            _change(record, now, rules)
            record.update(present=True, hits=0, clean=0)
            if record["state"] == RESOLVED:
                record.update(state=PENDING, since=now, fired_at=None, resolved_at=None)
        record["hits"] += 1
        record["clean"] = 0
        record.update(severity=alert.severity.value, message=alert.message, value=alert.value)
        if record["state"] == PENDING and record["hits"] >= _fire_after(rules, record):
            record.update(state=FIRING, fired_at=now)
    for key, record in records.items():
        if key in present:
            continue
        if record["code"] not in NO_SAMPLE_CODES and (not sampled or _unseen(record, report)):
            continue  # no verdict: the node, or the part of it the alert is about, was not seen
        if record["present"]:
            _change(record, now, rules)
            record.update(present=False, hits=0)
        record["clean"] += 1
        if record["state"] == FIRING and record["clean"] >= rules.resolve_after:
            record.update(state=RESOLVED, resolved_at=now)
        elif record["state"] == PENDING:
            record.update(state=RESOLVED, resolved_at=now)  # never fired: gone quietly


def _unseen(record: Mapping[str, Any], report: NodeReport) -> bool:
    """Whether the sample could not see what ``record`` is about: a GPU missing from it
    (nvidia-smi hung, fell off the bus) or a mount it could not read (hung): unknown, not
    healthy. The alerts that say so (``gpu_count_low``, ``disk_check_failed``) are judged."""
    sample = report.sample
    if sample is None:
        return True
    if record["gpu"] is not None and all(g.index != record["gpu"] for g in sample.gpus):
        return True
    unread = {d.mount for d in sample.disks if d.error or d.util_pct is None}
    return record["subject"] in unread and record["code"] not in UNREAD_DISK_CODES


def _new_record(alert: Alert, now: float) -> dict[str, Any]:
    return {
        "code": alert.code,
        "gpu": alert.gpu,
        "subject": None if alert.code in NO_SAMPLE_CODES else alert.subject,
        "severity": alert.severity.value,
        "message": alert.message,
        "value": alert.value,
        "state": PENDING,
        "present": True,
        "hits": 0,
        "clean": 0,
        "since": now,
        "fired_at": None,
        "resolved_at": None,
        "changes": [],
        "flapping": False,
        "notified": None,
        "notified_at": None,
    }


def _fire_after(rules: AlertRules, record: Mapping[str, Any]) -> int:
    return int(rules.fire_after.get(record["severity"], 1))


def _change(record: dict[str, Any], now: float, rules: AlertRules) -> None:
    """One raw change (raised or cleared), and the flapping verdict that follows from them."""
    changes = [t for t in record["changes"] if now - t < rules.flap_window_s]
    changes.append(now)
    record["changes"] = changes[-MAX_CHANGES:]
    _judge_flapping(record, rules, now)


def _judge_flapping(record: dict[str, Any], rules: AlertRules, now: float) -> None:
    recent = sum(1 for t in record["changes"] if now - t < rules.flap_window_s)
    if not record["flapping"] and recent > rules.flap_changes:
        record["flapping"] = True
    elif record["flapping"] and recent <= rules.flap_changes // 2:
        record["flapping"] = False


def _desired(record: Mapping[str, Any]) -> str | None:
    """What the channels should currently believe about this alert."""
    # An alert that never held for its ``fire_after`` (nor was told) is no alert, however
    # often it blinks: flapping is news only about one that fired.
    if record["flapping"] and (record["state"] == FIRING or record["notified"] is not None):
        return FLAPPING
    return FIRING if record["state"] == FIRING else None


def _reconcile(
    node: str, record: dict[str, Any], rules: AlertRules, silences: list[Silence], now: float
) -> AlertNotice | None:
    _judge_flapping(record, rules, now)  # changes age out of the window between polls too
    desired, told = _desired(record), record["notified"]
    if silenced(silences, node, record["code"], now):
        return None  # told, if still worth telling, when the silence ends
    repeat = (
        desired == FIRING
        and told == FIRING
        and record["present"]  # not a reminder while it counts down to its resolution
        and record["notified_at"] is not None
        and now - record["notified_at"] >= rules.repeat_interval_s
    )
    if desired == told and not repeat:
        return None
    record["notified"], record["notified_at"] = desired, now
    if desired is None:
        return _notice(node, record, RESOLVED, now)
    return _notice(node, record, desired, now, repeat=repeat)


def _notice(
    node: str, record: Mapping[str, Any], state: str, now: float, repeat: bool = False
) -> AlertNotice:
    return AlertNotice(
        node=node,
        code=record["code"],
        severity=record["severity"],
        message=record["message"],
        state=state,
        starts_at=record["fired_at"] or record["since"],
        ends_at=(record["resolved_at"] or now) if state == RESOLVED else None,
        value=record["value"],
        gpu=record["gpu"],
        subject=record["subject"],
        repeat=repeat,
    )


def _finished(record: Mapping[str, Any], rules: AlertRules, now: float) -> bool:
    """A record that has nothing left to tell and no flapping history worth keeping."""
    if record["state"] != RESOLVED or record["notified"] is not None or record["flapping"]:
        return False
    return not any(now - t < rules.flap_window_s for t in record["changes"])


def shown_state(node: str, record: Mapping[str, Any], silences: list[Silence], now: float) -> str:
    """The state ``check``, ``status`` and ``watch`` show next to the alert."""
    if silenced(silences, node, record["code"], now):
        return SILENCED
    if record["flapping"]:
        return FLAPPING
    return str(record["state"])


def firing_notices(
    state: Mapping[str, Any], now: float, nodes: Iterable[str] | None = None
) -> list[AlertNotice]:
    """Every alert the channels were told is firing or flapping and that is not silenced:
    what Alertmanager is re-sent periodically so that it does not expire them."""
    silences = load_silences(state)
    wanted = None if nodes is None else set(nodes)
    out = []
    for name, entry in (state.get("nodes") or {}).items():
        if (wanted is not None and name not in wanted) or not isinstance(entry, dict):
            continue
        for record in (entry.get("lifecycle") or {}).values():
            if record.get("notified") in (FIRING, FLAPPING) and not silenced(
                silences, name, record["code"], now
            ):
                out.append(_notice(name, record, record["notified"], now))
    return out


def forget_unconfigured(
    state: dict[str, Any], configured: Iterable[str], now: float
) -> list[AlertNotice]:
    """Drop the lifecycle of every node no longer configured; what the channels were told is
    firing is told resolved (a node removed from cluster.yaml must not page for ever)."""
    keep = set(configured)
    out = []
    for name, entry in (state.get("nodes") or {}).items():
        if name in keep or not isinstance(entry, dict) or not entry.get("lifecycle"):
            continue
        for record in entry["lifecycle"].values():
            if record.get("notified") is not None:
                gone = {**record, "message": f"{record['message']} (node no longer configured)"}
                out.append(_notice(name, gone, RESOLVED, now))
        entry["lifecycle"] = {}
    return out


def with_states(report: NodeReport, states: Mapping[str, str]) -> NodeReport:
    """``report`` with each alert's lifecycle state set (alerts the lifecycle ignores: None)."""
    alerts = tuple(
        replace(a, state=states.get(alert_key(a.code, a.gpu, a.subject)))
        if a.code not in IGNORED_CODES
        else a
        for a in report.alerts
    )
    return replace(report, alerts=alerts)
