"""The ``slurm:`` section of cluster.yaml: job activity from Slurm, and drain and resume.

Imports only the standard library, ``config_yaml`` and ``config_notify`` (durations). Off unless
``enabled: true``. The rules are LBNL NHC's, made explicit: a node is drained only for a CRITICAL
alert whose code matches ``drain.codes`` (never for being unreachable: that is an unknown, not a
fault of the node) held ``drain.after`` consecutive polls; it is resumed only when its Slurm
reason still starts with ``reason_prefix`` (so never a node someone else drained) after
``resume.after`` healthy polls; and never more than ``guard.max_drained_fraction`` of the
configured nodes are drained by ugro-health at once.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ugro_health.config_notify import parse_duration_s
from ugro_health.config_yaml import YamlDoc, check_keys, section, str_list_problem

# A node ugro-health could not sample gives no verdict: these never drain it.
NEVER_DRAIN_CODES = frozenset(
    {
        "node_unreachable",
        "node_isolated",
        "node_not_polled",
        "node_recovered",
        "probe_failed",
        "probe_invalid",
        "probe_partial",
        "alerts_truncated",
    }
)


@dataclass(frozen=True, slots=True)
class SlurmSettings:
    enabled: bool = False
    jobs: bool = True  # running jobs from squeue count as job activity
    manage: bool = True  # drain and resume (watch; check only with --slurm-act)
    dry_run: bool = False  # decide and report, run no scontrol update
    node_names: Mapping[str, str] = field(default_factory=dict)  # ugro name -> Slurm name
    scontrol: str = "scontrol"
    sinfo: str = "sinfo"  # accepted; node states are read with scontrol (see README)
    squeue: str = "squeue"
    timeout_s: float = 10.0  # every Slurm command's deadline
    jobs_interval_s: float = 10.0  # how often watch reads squeue
    drain_codes: tuple[str, ...] = ("*",)  # globs on CRITICAL alert codes that drain
    drain_after: int = 2  # consecutive polls the alert must hold
    resume_after: int = 3  # consecutive healthy polls before a resume
    reason_prefix: str = "ugro-health:"
    max_drained_fraction: float = 0.10  # of the configured nodes (at least one node)
    unreachable_fraction: float = 0.5  # more of the polled nodes unreachable: drain nothing

    def slurm_name(self, node: str) -> str:
        return self.node_names.get(node, node)

    def drains(self, code: str) -> bool:
        """Whether a CRITICAL alert with this code may drain its node."""
        if code in NEVER_DRAIN_CODES or code.startswith("slurm_"):
            return False
        return any(fnmatch.fnmatchcase(code, glob) for glob in self.drain_codes)

    def max_drained(self, configured: int) -> int:
        """How many nodes ugro-health may hold drained at once (always at least one)."""
        return max(1, int(configured * self.max_drained_fraction + 1e-9))


_KEYS = {
    "enabled": (bool,),
    "jobs": (bool,),
    "manage": (bool,),
    "dry_run": (bool,),
    "node_names": (dict,),
    "scontrol": (str,),
    "sinfo": (str,),
    "squeue": (str,),
    "timeout": (int, float, str),
    "jobs_interval": (int, float, str),
    "drain": (dict,),
    "resume": (dict,),
    "reason_prefix": (str,),
    "guard": (dict,),
}
_DRAIN_KEYS = {"codes": (list,), "after": (int,)}
_RESUME_KEYS = {"after": (int,)}
_GUARD_KEYS = {"max_drained_fraction": (int, float), "unreachable_fraction": (int, float)}


def parse_slurm(doc: YamlDoc, data: Mapping[str, Any]) -> SlurmSettings:
    values = check_keys(doc, section(doc, data, "slurm"), _KEYS, ("slurm",))
    out: dict[str, Any] = {
        key: values[key]
        for key in ("enabled", "jobs", "manage", "dry_run", "scontrol", "sinfo", "squeue")
        if key in values
    }
    for key in ("scontrol", "sinfo", "squeue"):
        if key in out and not out[key].strip():
            doc.problem(("slurm", key), "must be a command name or path")
            del out[key]
    for key in ("timeout", "jobs_interval"):
        if key in values:
            seconds = parse_duration_s(values[key])
            if seconds is None or seconds <= 0:
                doc.problem(("slurm", key), "must be a duration such as 10s or 10")
            else:
                out[f"{key}_s"] = seconds
    out.update(_node_names(doc, values.get("node_names")))
    if "reason_prefix" in values:
        prefix = values["reason_prefix"].strip()
        if not prefix or "\n" in prefix:
            doc.problem(("slurm", "reason_prefix"), "must be a non-empty single line")
        else:
            out["reason_prefix"] = prefix
    out.update(_drain(doc, values))
    out.update(_resume(doc, values))
    out.update(_guard(doc, values))
    return SlurmSettings(**out)


def _node_names(doc: YamlDoc, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    names: dict[str, str] = {}
    for node, name in value.items():
        if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name):
            doc.problem(("slurm", "node_names", node), f"must be a Slurm node name, not {name!r}")
        else:
            names[str(node)] = name
    return {"node_names": names}


def _drain(doc: YamlDoc, values: Mapping[str, Any]) -> dict[str, Any]:
    drain = check_keys(doc, values.get("drain") or {}, _DRAIN_KEYS, ("slurm", "drain"))
    out = _after(doc, drain, "drain")
    if "codes" in drain:
        problem = str_list_problem(drain["codes"])
        if problem or not drain["codes"]:
            doc.problem(("slurm", "drain", "codes"), problem or "must name at least one glob")
        else:
            out["drain_codes"] = tuple(drain["codes"])
    return out


def _resume(doc: YamlDoc, values: Mapping[str, Any]) -> dict[str, Any]:
    resume = check_keys(doc, values.get("resume") or {}, _RESUME_KEYS, ("slurm", "resume"))
    return _after(doc, resume, "resume")


def _after(doc: YamlDoc, values: Mapping[str, Any], name: str) -> dict[str, Any]:
    after = values.get("after")
    if after is None:
        return {}
    if after < 1:
        doc.problem(("slurm", name, "after"), "must be a whole number of polls, >= 1")
        return {}
    return {f"{name}_after": after}


def _guard(doc: YamlDoc, values: Mapping[str, Any]) -> dict[str, Any]:
    guard = check_keys(doc, values.get("guard") or {}, _GUARD_KEYS, ("slurm", "guard"))
    out: dict[str, Any] = {}
    for key, value in guard.items():
        if isinstance(value, bool) or not 0 < value <= 1:
            doc.problem(("slurm", "guard", key), "must be a fraction: more than 0, at most 1")
        else:
            out[key] = float(value)
    return out
