"""The ``nodes:`` list of a cluster file: keys, per-key checks, ranges, defaults merged in.

Part of loading a configuration (``config.py`` calls ``parse_nodes``); every problem is reported
on the ``YamlDoc`` with the line it was written on, and parsing carries on to collect the rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ugro_health.config import HOST_RE, NODE_NAME_RE, PYTHON_RE, NodeConfig
from ugro_health.config_yaml import Where, YamlDoc, check_keys, describe, str_list_problem

NODE_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "host": (str,),
    "port": (int,),
    "user": (str,),
    "identity_file": (str,),
    "python": (str,),
    "transport": (str,),
    "gpus": (int,),
    "nvlinks": (int,),
    "mounts": (list,),
    "tags": (list,),
    "proxy_jump": (str,),
}
DEFAULTS_KEYS = {k: v for k, v in NODE_KEYS.items() if k != "name"}


def _mounts_problem(value: Any) -> str | None:
    problem = str_list_problem(value)
    if problem is None:
        for mount in value:
            if not mount.startswith("/"):
                return f"mount {mount!r} must be an absolute path"
    return problem


# Per node key: the problem with a (well-typed) value, or None. Checked in this order.
_NODE_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "host": lambda v: None if HOST_RE.match(v) else f"invalid host {v!r}",
    "port": lambda v: None if 1 <= v <= 65535 else f"port {v} is out of range 1-65535",
    "python": lambda v: None if PYTHON_RE.match(v) else f"invalid interpreter path {v!r}",
    "transport": lambda v: (
        None if v in ("auto", "ssh", "local") else "must be one of auto, ssh, local"
    ),
    "gpus": lambda v: None if v >= 0 else "must be 0 or more",
    "nvlinks": lambda v: None if v >= 0 else "must be 0 or more",
    "mounts": _mounts_problem,
    "tags": str_list_problem,
}


def parse_nodes(
    doc: YamlDoc, data: Mapping[str, Any], defaults: Mapping[str, Any]
) -> list[NodeConfig]:
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        doc.problem(("nodes",), "must be a non-empty list of nodes")
        return []
    nodes: list[NodeConfig] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_nodes):
        for node in _node_from(doc, raw, defaults, index):
            if node.name in seen:
                doc.problem(
                    ("nodes", index, "name"),
                    f"duplicate node {node.name!r} (first at nodes[{seen[node.name]}])",
                )
                continue
            seen[node.name] = index
            nodes.append(node)
    return nodes


def _node_from(doc: YamlDoc, raw: Any, defaults: Mapping[str, Any], index: int) -> list[NodeConfig]:
    where: Where = ("nodes", index)
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        doc.problem(where, f"a node must be a mapping with a `name`, not {describe(raw)}")
        return []
    valid = check_keys(doc, raw, NODE_KEYS, where)
    if "name" not in valid:
        if "name" not in raw:  # a name of the wrong type is already reported
            doc.problem(where, "a node needs a `name`")
        return []
    names = expand(doc, str(valid["name"]), (*where, "name"))
    if len(names) > 1 and "host" in valid:
        doc.problem((*where, "host"), "a node range cannot share one `host`; omit it")
        del valid["host"]
    merged = {**defaults, **valid}
    return [_build_node(doc, merged, set(valid), name, where) for name in names]


def expand(doc: YamlDoc, pattern: str, where: Where) -> list[str]:
    names = [pattern]
    if "[" in pattern:
        from ClusterShell.NodeSet import NodeSet, NodeSetException

        try:
            names = list(NodeSet(pattern))
        except NodeSetException as exc:
            doc.problem(where, f"invalid node range {pattern!r}: {exc}")
            return []
    bad = [name for name in names if not NODE_NAME_RE.match(name)]
    if bad:
        doc.problem(where, f"invalid node name {bad[0]!r}: use letters, digits, '.', '_' and '-'")
    return [name for name in names if name not in bad]


_USER_RE = re.compile(r"^[^\s@:/]+$")


def _split_user_at_host(doc: YamlDoc, values: dict[str, Any], own: set[str], where: Where) -> None:
    """``host: bob@gpu1`` as ``ssh bob@gpu1`` reads it (the last ``@`` splits); a node's own
    ``user`` that says otherwise is a mistake, not a silent choice."""
    host = values.get("host")
    if not isinstance(host, str) or "@" not in host:
        return
    user, _, values["host"] = host.rpartition("@")
    at = (*where, "host") if "host" in own else ("defaults", "host")
    if not _USER_RE.match(user):
        doc.problem(at, f"invalid user {user!r} in host {host!r}")
    elif "user" in own and values.get("user") != user:
        doc.problem(at, f"host {host!r} names user {user!r} but user is {values.get('user')!r}")
    else:
        values["user"] = user


def _build_node(
    doc: YamlDoc, merged: Mapping[str, Any], own: set[str], name: str, where: Where
) -> NodeConfig:
    """One node from its merged keys; a bad value is reported where it was written (the node's
    own key, else ``defaults``)."""
    values = dict(merged)
    _split_user_at_host(doc, values, own, where)
    for key, check in _NODE_CHECKS.items():
        problem = check(values[key]) if key in values else None
        if problem is not None:
            doc.problem((*where, key) if key in own else ("defaults", key), problem)
            del values[key]  # collecting: carry on with the default
    return NodeConfig(
        name=name,
        host=values.get("host"),
        port=values.get("port"),
        user=values.get("user"),
        identity_file=values.get("identity_file"),
        python=values.get("python", "python3"),
        transport=values.get("transport", "auto"),
        gpus=values.get("gpus"),
        nvlinks=values.get("nvlinks"),
        mounts=tuple(values.get("mounts", ["/"])),
        tags=tuple(values.get("tags", [])),
        proxy_jump=values.get("proxy_jump"),
    )
