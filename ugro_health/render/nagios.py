"""One monitoring-plugins line with perfdata: ``UGRO-HEALTH CRITICAL - ... | perfdata``.

Thresholds follow the plugin range syntax (nagios-plugins.org/doc/guidelines.html#THRESHOLDFORMAT):
``N`` alerts above N, ``N:`` below N, ``@N:`` at N or above; each mirrors the rule in
``engine/scoring.py`` exactly, so a graph's threshold lines agree with the status.
"""

from __future__ import annotations

import re

from ugro_health.config import Thresholds
from ugro_health.model import ClusterReport, Severity
from ugro_health.render.common import counts_line, printable

_LABEL_BAD = re.compile(r"[='\s]")
MAX_PROBLEMS = 5


def _label(name: str) -> str:
    return "'" + _LABEL_BAD.sub("_", printable(name)) + "'"


def _num(value: float) -> str:
    """``80`` for 80.0, ``82.5`` for 82.5: no rounding that would move a value past a limit."""
    return f"{value:g}"


def nagios_text(text: str) -> str:
    """One line of plugin output: printable, and no ``|`` (which starts the perfdata)."""
    return printable(text).replace("|", "/")


def nagios_line(report: ClusterReport, limits: Thresholds) -> str:
    status = report.status.name
    summary = counts_line(list(report.nodes))
    problems = []
    for node in report.nodes:
        worst = [a for a in node.alerts if a.severity is not Severity.INFO]
        if worst:
            problems.append(f"{node.name}: {worst[0].message}")
    detail = ("; " + "; ".join(problems[:MAX_PROBLEMS])) if problems else ""
    if len(problems) > MAX_PROBLEMS:
        detail += f"; +{len(problems) - MAX_PROBLEMS} more"
    perf = [f"nodes={len(report.nodes)};;;0", f"duration={report.duration_s:.3f}s;;;0"]
    # One unreachable node is CRITICAL: critical above 0.
    unreachable = sum(1 for n in report.nodes if n.unreachable)
    perf.append(f"unreachable={unreachable};;0;0;{len(report.nodes)}")
    for node in report.nodes:
        if node.score is not None:
            # WARNING below score_warn: range "70:" (alert when under 70).
            perf.append(f"{_label(node.name + '_score')}={node.score};{limits.score_warn}:;;0;100")
        if node.sample is not None:
            temps = [g.temp_c for g in node.sample.gpus if g.temp_c is not None]
            if temps:
                # WARNING / CRITICAL at the limit or above: ranges "@80:" and "@85:".
                perf.append(
                    f"{_label(node.name + '_gpu_temp_max')}={_num(max(temps))};"
                    f"@{_num(limits.gpu_temp_warn_c)}:;@{_num(limits.gpu_temp_crit_c)}:"
                )
    return f"UGRO-HEALTH {status} - {nagios_text(summary + detail)} | {' '.join(perf)}"
