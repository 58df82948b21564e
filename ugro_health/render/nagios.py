"""One monitoring-plugins line with perfdata: ``UGRO-HEALTH CRITICAL - ... | perfdata``."""

from __future__ import annotations

import re

from ugro_health.config import Thresholds
from ugro_health.model import ClusterReport, Severity
from ugro_health.render.common import counts_line

_LABEL_BAD = re.compile(r"[='\s]")


def _label(name: str) -> str:
    return "'" + _LABEL_BAD.sub("_", name) + "'"


def nagios_line(report: ClusterReport, limits: Thresholds) -> str:
    status = report.status.name
    summary = counts_line(list(report.nodes))
    problems = []
    for node in report.nodes:
        worst = [a for a in node.alerts if a.severity is not Severity.INFO]
        if worst:
            problems.append(f"{node.name}: {worst[0].message}")
    detail = ("; " + "; ".join(problems[:5])) if problems else ""
    if len(problems) > 5:
        detail += f"; +{len(problems) - 5} more"
    detail = detail.replace("|", "/")
    perf = [f"nodes={len(report.nodes)};;;0", f"duration={report.duration_s:.3f}s;;;0"]
    unreachable = sum(1 for n in report.nodes if not n.reachable)
    perf.append(f"unreachable={unreachable};;1;0")
    for node in report.nodes:
        if node.score is not None:
            perf.append(f"{_label(node.name + '_score')}={node.score};{limits.score_warn};;0;100")
        if node.sample is not None:
            temps = [g.temp_c for g in node.sample.gpus if g.temp_c is not None]
            if temps:
                perf.append(
                    f"{_label(node.name + '_gpu_temp_max')}={max(temps):.0f};"
                    f"{limits.gpu_temp_warn_c:.0f};{limits.gpu_temp_crit_c:.0f}"
                )
    return f"UGRO-HEALTH {status} - {summary}{detail} | {' '.join(perf)}"
