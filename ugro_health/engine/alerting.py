"""One poll's alerts through the lifecycle and into the channels' outboxes, in the state write.

Imports ``engine.lifecycle``, ``notify`` (routing and the outbox; never a channel's sending),
``store`` and ``model``. ``Alerting.change()`` is a state change for ``StateStore.update``
(``Recorder.record``'s ``also``): under the state lock it advances the lifecycle, and queues
what the channels must hear in their outboxes *before* the state that says they were told is
written. A crash in between sends a notification twice (at least once), never zero times; an
outbox that cannot be written fails the state write, so the lifecycle does not move and the
next poll decides again.

Alertmanager forgets an alert that is not re-sent before its ``endsAt``: each channel of that
type gets the set of firing alerts again every ``resend_interval`` (one such resend queued at
a time).
"""

from __future__ import annotations

import copy
import errno
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ugro_health.config import Config
from ugro_health.engine import lifecycle
from ugro_health.model import Alert, ClusterReport, NodeReport, NodeSample, worst_status
from ugro_health.notify.channels import hears, route
from ugro_health.notify.deliver import outboxes
from ugro_health.notify.outbox import Outbox
from ugro_health.store._fs import StoreError

CLUSTER_NODE = "@cluster"  # cluster-level alerts' node in notices (never a valid node name)


class Alerting:
    def __init__(
        self, state_dir: Path, config: Config, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.clock = clock
        self.boxes: dict[str, Outbox] = outboxes(state_dir, config.notify, clock)
        self.outcome = lifecycle.Outcome()
        self.queued = 0  # notifications queued by the last change()
        self.dropped = 0  # the oldest dropped from a full outbox by the last change()
        self.warnings: list[str] = []
        self._configured = [n.name for n in config.nodes]

    def change(
        self,
        reports: Iterable[NodeReport],
        now: float,
        cluster: Sequence[Alert] | None = None,
    ) -> Callable[[dict[str, Any]], None]:
        """The state change that judges ``reports`` and queues their notifications.

        ``cluster``: this poll's cluster-level alerts (the Slurm storm guard), judged by the
        same lifecycle under ``state["cluster"]`` as if from one node, ``CLUSTER_NODE``;
        None when nothing was learnt about them."""
        reports = list(reports)

        def judge(state: dict[str, Any]) -> None:
            outcome = lifecycle.advance(state, reports, self.config.alerts, now)
            outcome.notices.extend(lifecycle.forget_unconfigured(state, self._configured, now))
            if cluster is not None:
                outcome.notices.extend(_judge_cluster(state, cluster, self.config, now))
            try:
                self._queue(state, outcome, now)
            except StoreError as exc:  # fails the whole write: nothing is marked as told
                raise OSError(errno.EIO, str(exc)) from None
            self.outcome = outcome
            _mark_stored_alerts(state, outcome)

        return judge

    def preview(self, state: dict[str, Any], reports: Iterable[NodeReport], now: float) -> None:
        """The states the alerts would have, without changing or queueing anything
        (``check --no-record``)."""
        self.outcome = lifecycle.advance(copy.deepcopy(state), reports, self.config.alerts, now)

    def annotate(self, report: ClusterReport) -> ClusterReport:
        """``report`` with each alert's lifecycle state from the last change or preview."""
        nodes = tuple(
            lifecycle.with_states(n, self.outcome.states[n.name])
            if n.name in self.outcome.states
            else n
            for n in report.nodes
        )
        return replace(report, nodes=nodes)

    def _queue(self, state: dict[str, Any], outcome: lifecycle.Outcome, now: float) -> None:
        settings = self.config.notify
        self.queued = self.dropped = 0
        self.warnings = []
        batches = route(outcome.notices, settings.channels, settings.cluster, now)
        for channel in settings.channels:
            if channel.type == "alertmanager":
                self._resend(state, channel, batches, now)
        for name, notification in batches.items():
            box = self.boxes[name]
            self.dropped += box.put([notification])
            self.queued += 1
            if box.warning:
                self.warnings.append(box.warning)

    def _resend(
        self, state: dict[str, Any], channel: Any, batches: dict[str, Any], now: float
    ) -> None:
        box = self.boxes[channel.name]
        doc = box.load()
        interval = float(channel.options.get("resend_interval") or 60.0)
        last = doc.get("last_resend")
        due = last is None or now - float(last) >= interval or now < float(last)
        if not due or any(e["n"].get("resend") for e in doc["entries"]):
            return
        firing = lifecycle.firing_notices(state, now, self._configured)
        firing = [n for n in firing if hears(channel, n)]
        if firing:
            resend = route(firing, [channel], self.config.notify.cluster, now, resend=True)
            self.dropped += box.put(list(resend.values()))
        box.resent(now)


def _judge_cluster(
    state: dict[str, Any], alerts: Sequence[Alert], config: Config, now: float
) -> list[Any]:
    section = state.get("cluster")
    if not isinstance(section, dict) or not isinstance(section.get("nodes"), dict):
        section = state["cluster"] = {"nodes": {}}
    doc = {"nodes": section["nodes"], "silences": state.get("silences") or {}}
    stand_in = NodeReport(
        CLUSTER_NODE,
        worst_status(a.severity.status for a in alerts),
        None,
        now,
        0.0,
        sample=NodeSample(),  # "sampled": an alert that is gone is clean, and resolves
        alerts=tuple(alerts),
    )
    return lifecycle.advance(doc, [stand_in], config.alerts, now).notices


def _mark_stored_alerts(state: dict[str, Any], outcome: lifecycle.Outcome) -> None:
    """Write each stored alert's lifecycle state beside it, for ``status``."""
    for name, states in outcome.states.items():
        entry = (state.get("nodes") or {}).get(name)
        if not isinstance(entry, dict):
            continue
        for alert in entry.get("alerts") or ():
            if isinstance(alert, dict) and alert.get("code") not in lifecycle.IGNORED_CODES:
                key = lifecycle.alert_key(
                    alert.get("code") or "", alert.get("gpu"), alert.get("subject")
                )
                alert["state"] = states.get(key)
