"""The ``alerts:`` and ``notify:`` sections of cluster.yaml: the alert lifecycle's rules and the
notification channels.

Imports only the standard library and ``config_yaml``. Channels are checked here against one
table of keys per type (``CHANNEL_KEYS``), so ``config validate`` refuses an unknown type, a
missing URL or a bad glob with the file and line; the channel modules (``notify/``) read the
checked values from ``ChannelConfig.options``, defaults filled in.

A secret (SMTP password, webhook HMAC key, Slack URL) is written as ``{env: NAME}`` or
``{file: PATH}``; an inline string is accepted but flagged (``inline_secrets``) so that a
world-readable file holding one is warned about. ``Secret`` never shows its value in ``repr``
or ``str``: only ``reveal()`` does, at send time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ugro_health.config_yaml import YamlDoc, check_keys, describe, section, str_list_problem

SEVERITIES = ("info", "warning", "critical")
CHANNEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class SecretError(Exception):
    """A secret could not be read (variable unset, file unreadable); one line, no value."""


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret's source; its value is read only by ``reveal()``."""

    env: str | None = None
    file: str | None = None
    value: str | None = field(default=None, repr=False)  # inline in cluster.yaml (flagged)

    def reveal(self) -> str:
        if self.env is not None:
            found = os.environ.get(self.env)
            if not found:
                raise SecretError(f"environment variable {self.env} is not set")
            return found
        if self.file is not None:
            try:
                return Path(self.file).expanduser().read_text().strip()
            except OSError as exc:
                raise SecretError(f"secret file {self.file}: {exc.strerror}") from None
        return self.value or ""

    def __str__(self) -> str:
        return self.shown()

    def shown(self) -> str:
        """What ``config show`` prints: where the secret comes from, never the secret."""
        if self.env is not None:
            return f"<secret from ${self.env}>"
        if self.file is not None:
            return f"<secret from {self.file}>"
        return "<secret, inline>"


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    name: str
    type: str  # webhook | slack | email | exec | alertmanager
    min_severity: str = "warning"  # info | warning | critical
    nodes: tuple[str, ...] = ()  # shell globs; empty: every node
    codes: tuple[str, ...] = ()  # shell globs on alert codes; empty: every code
    send_resolved: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)  # the type's keys, defaults filled


@dataclass(frozen=True, slots=True)
class AlertRules:
    """The alert lifecycle's rules (``alerts:``)."""

    # consecutive polls an alert must hold before it fires, by severity
    fire_after: Mapping[str, int] = field(
        default_factory=lambda: {"critical": 1, "warning": 2, "info": 1}
    )
    resolve_after: int = 3  # consecutive clean polls before a firing alert resolves
    flap_changes: int = 4  # more raw raise/clear changes than this in flap_window: flapping
    flap_window_s: float = 1800.0
    repeat_interval_s: float = 4 * 3600.0  # a still-firing alert is re-notified this often


@dataclass(frozen=True, slots=True)
class NotifySettings:
    cluster: str = "default"  # the cluster's name in every notification
    channels: tuple[ChannelConfig, ...] = ()
    outbox_max: int = 1000  # notifications kept per channel; overflow drops the oldest
    check_wait_s: float = 10.0  # how long a `check` waits for delivery before leaving it queued
    inline_secrets: tuple[str, ...] = ()  # "channel.key" of secrets written inline


# --- the channel types ------------------------------------------------------------------------
# key -> (kind, default); kind: "secret" (string, {env:}, {file:}), "str", "float", "bool",
# "list" (of strings), "map" (string -> string), "url-list"; a default of REQUIRED must be given.
REQUIRED = object()
_HTTP = {"timeout": ("float", 10.0), "tls_verify": ("bool", True), "ca_file": ("str", None)}
CHANNEL_KEYS: dict[str, dict[str, tuple[str, Any]]] = {
    "webhook": {
        "url": ("str", REQUIRED),
        "secret": ("secret", None),  # HMAC-SHA256 key: X-Ugro-Signature header
        "headers": ("map", {}),
        **_HTTP,
    },
    "slack": {"url": ("secret", REQUIRED), **_HTTP},
    "email": {
        "host": ("str", REQUIRED),
        "port": ("int", None),  # None: 465 with tls: implicit, else 587 (25 with tls: none)
        "tls": ("str", "starttls"),  # starttls | implicit | none
        "username": ("str", None),
        "password": ("secret", None),
        "from": ("str", REQUIRED),
        "to": ("list", REQUIRED),
        "timeout": ("float", 30.0),
        "tls_verify": ("bool", True),
        "ca_file": ("str", None),
    },
    "exec": {"command": ("list", REQUIRED), "timeout": ("float", 30.0)},
    "alertmanager": {
        "urls": ("list", REQUIRED),
        "resend_interval": ("duration", 60.0),
        "username": ("str", None),
        "password": ("secret", None),
        "bearer_token": ("secret", None),
        **_HTTP,
    },
}
_COMMON_KEYS = ("name", "type", "min_severity", "nodes", "codes", "send_resolved")
_ALERT_KEYS = {
    "fire_after": (dict,),
    "resolve_after": (int,),
    "flap_changes": (int,),
    "flap_window": (int, float, str),
    "repeat_interval": (int, float, str),
}
_NOTIFY_KEYS = {
    "cluster": (str,),
    "channels": (list,),
    "outbox_max": (int,),
    "check_wait": (int, float, str),
}


def parse_duration_s(value: Any) -> float | None:
    """Seconds from ``90``, ``"90s"``, ``"30m"``, ``"4h"``, ``"1d"``; None if not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    match = _DURATION_RE.match(str(value))
    return float(match.group(1)) * _UNIT_S[match.group(2)] if match else None


def parse_alert_rules(doc: YamlDoc, data: Mapping[str, Any]) -> AlertRules:
    values = check_keys(doc, section(doc, data, "alerts"), _ALERT_KEYS, ("alerts",))
    rules = AlertRules()
    fire = dict(rules.fire_after)
    for key, count in (values.get("fire_after") or {}).items():
        if key not in SEVERITIES:
            doc.problem(("alerts", "fire_after", key), f"unknown severity (one of {SEVERITIES})")
        elif not isinstance(count, int) or isinstance(count, bool) or count < 1:
            doc.problem(("alerts", "fire_after", key), "must be a whole number of polls, >= 1")
        else:
            fire[key] = count
    out: dict[str, Any] = {"fire_after": fire}
    for key in ("resolve_after", "flap_changes"):
        if key in values:
            if values[key] < 1:
                doc.problem(("alerts", key), "must be at least 1")
            else:
                out[key] = values[key]
    for key in ("flap_window", "repeat_interval"):
        if key in values:
            seconds = parse_duration_s(values[key])
            if seconds is None or seconds <= 0:
                doc.problem(("alerts", key), "must be a duration such as 30m, 4h or 3600")
            else:
                out[f"{key}_s"] = seconds
    return AlertRules(**out)


def parse_notify(doc: YamlDoc, data: Mapping[str, Any]) -> NotifySettings:
    values = check_keys(doc, section(doc, data, "notify"), _NOTIFY_KEYS, ("notify",))
    out: dict[str, Any] = {}
    if "cluster" in values:
        out["cluster"] = values["cluster"]
    if "outbox_max" in values:
        if values["outbox_max"] < 1:
            doc.problem(("notify", "outbox_max"), "must be at least 1")
        else:
            out["outbox_max"] = values["outbox_max"]
    if "check_wait" in values:
        seconds = parse_duration_s(values["check_wait"])
        if seconds is None:
            doc.problem(("notify", "check_wait"), "must be a duration such as 10s or 10")
        else:
            out["check_wait_s"] = seconds
    channels: list[ChannelConfig] = []
    inline: list[str] = []
    for index, item in enumerate(values.get("channels") or ()):
        channel = _channel(doc, item, ("notify", "channels", index), inline)
        if channel is None:
            continue
        if any(c.name == channel.name for c in channels):
            doc.problem(("notify", "channels", index, "name"), f"duplicate name {channel.name!r}")
            continue
        channels.append(channel)
    return NotifySettings(channels=tuple(channels), inline_secrets=tuple(inline), **out)


def _channel(
    doc: YamlDoc, item: Any, where: tuple[Any, ...], inline: list[str]
) -> ChannelConfig | None:
    if not isinstance(item, dict):
        doc.problem(where, f"must be a mapping with name and type, not {describe(item)}")
        return None
    kind = item.get("type")
    if kind not in CHANNEL_KEYS:
        doc.problem(
            (*where, "type"), f"unknown channel type {kind!r} (one of {sorted(CHANNEL_KEYS)})"
        )
        return None
    name = item.get("name")
    if not isinstance(name, str) or not CHANNEL_NAME_RE.match(name):
        doc.problem((*where, "name"), "required: letters, digits, '.', '_' or '-'")
        return None
    keys = CHANNEL_KEYS[kind]
    ok = True
    common: dict[str, Any] = {}
    for key, value in item.items():
        if key in _COMMON_KEYS:
            if key not in ("name", "type"):
                got = _common(doc, key, value, (*where, key))
                ok = ok and got is not None
                if got is not None:
                    common[key] = got
        elif key not in keys:
            doc.problem((*where, key), f"unknown key for a {kind} channel")
            ok = False
    options: dict[str, Any] = {}
    for key, (kind_of, default) in keys.items():
        if key not in item or item[key] is None:
            if default is REQUIRED:
                doc.problem((*where, key), f"required for a {kind} channel")
                ok = False
            options[key] = default
            continue
        value = _option(doc, kind_of, item[key], (*where, key))
        if value is None:
            ok = False
        else:
            options[key] = value
            if isinstance(value, Secret) and value.value is not None:
                inline.append(f"{name}.{key}")
            if kind_of == "map":
                inline.extend(
                    f"{name}.{key}.{header}"
                    for header, text in value.items()
                    if isinstance(text, str) and SENSITIVE_HEADER_RE.search(header)
                )
    ok = ok and _channel_rules(doc, kind, options, where)
    return ChannelConfig(name=name, type=kind, options=options, **common) if ok else None


def _common(doc: YamlDoc, key: str, value: Any, where: tuple[Any, ...]) -> Any:
    if key == "min_severity":
        if value not in SEVERITIES:
            doc.problem(where, f"must be one of {', '.join(SEVERITIES)}")
            return None
        return value
    if key == "send_resolved":
        if not isinstance(value, bool):
            doc.problem(where, f"must be true or false, not {describe(value)}")
            return None
        return value
    globs = _globs(doc, value, where)
    return globs


def _globs(doc: YamlDoc, value: Any, where: tuple[Any, ...]) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    problem = str_list_problem(value)
    if problem is not None:
        doc.problem(where, problem)
        return None
    for glob in value:
        bad = glob_problem(glob)
        if bad:
            doc.problem(where, f"bad glob {glob!r}: {bad}")
            return None
    return tuple(value)


def glob_problem(glob: str) -> str | None:
    """Why a shell glob is unusable (empty, an unclosed ``[``), or None."""
    if not glob.strip():
        return "empty"
    depth = 0
    for char in glob:
        if char == "[":
            depth += 1
        elif char == "]" and depth:
            depth = 0
    return "unclosed [" if depth else None


def _option(doc: YamlDoc, kind: str, value: Any, where: tuple[Any, ...]) -> Any:
    if kind == "secret":
        return _secret(doc, value, where)
    if kind == "list":
        if isinstance(value, str):
            value = [value]
        problem = str_list_problem(value) or (None if value else "must not be empty")
        if problem:
            doc.problem(where, problem)
            return None
        return tuple(value)
    if kind == "map":  # header name -> a string, or a secret ({env:}/{file:}) for a token
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and (isinstance(v, str) or _is_secret_ref(v))
            for k, v in value.items()
        ):
            doc.problem(where, "must map names to strings or {env: VAR} / {file: PATH}")
            return None
        return {
            k: v if isinstance(v, str) else _secret(doc, v, (*where, k)) for k, v in value.items()
        }
    if kind == "duration":
        seconds = parse_duration_s(value)
        if seconds is None or seconds <= 0:
            doc.problem(where, "must be a duration such as 60s, 5m or 60")
        return seconds if seconds and seconds > 0 else None
    wanted = {"str": (str,), "float": (int, float), "int": (int,), "bool": (bool,)}[kind]
    if not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted):
        doc.problem(where, f"must be {kind.replace('str', 'a string')}, not {describe(value)}")
        return None
    if kind in ("float", "int") and float(value) <= 0:
        doc.problem(where, "must be more than zero")
        return None
    return float(value) if kind == "float" else value


def _is_secret_ref(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("env", "file")


SENSITIVE_HEADER_RE = re.compile(r"authorization|token|secret|password|api[-_]?key|cookie", re.I)


def _secret(doc: YamlDoc, value: Any, where: tuple[Any, ...]) -> Secret | None:
    if isinstance(value, str) and value:
        return Secret(value=value)
    if isinstance(value, dict) and len(value) == 1:
        ((source, ref),) = value.items()
        if source == "env" and isinstance(ref, str) and ENV_NAME_RE.match(ref):
            return Secret(env=ref)
        if source == "file" and isinstance(ref, str) and ref:
            return Secret(file=ref)
    doc.problem(where, "must be {env: VARIABLE}, {file: PATH} or a string")
    return None


def _channel_rules(
    doc: YamlDoc, kind: str, options: dict[str, Any], where: tuple[Any, ...]
) -> bool:
    """What one key alone cannot say: URL schemes, the e-mail TLS mode."""
    ok = True
    for key in ("url", "urls"):
        value = options.get(key)
        urls = value if isinstance(value, tuple) else (value,)
        for url in urls:
            if isinstance(url, str) or (isinstance(url, Secret) and url.value is not None):
                text = url if isinstance(url, str) else url.value or ""
                if not re.match(r"^https?://[^/\s]+", text):
                    doc.problem((*where, key), f"must be an http:// or https:// URL, not {text!r}")
                    ok = False
                elif "@" in text.split("//", 1)[1].split("/", 1)[0]:
                    doc.problem((*where, key), "must not hold credentials (user:password@)")
                    ok = False
    if kind == "email" and options.get("tls") not in ("starttls", "implicit", "none"):
        doc.problem((*where, "tls"), "must be starttls, implicit or none")
        ok = False
    if kind == "email" and options.get("password") is not None and not options.get("username"):
        doc.problem((*where, "username"), "required with a password")
        ok = False
    return ok


def world_readable(path: str | None) -> bool:
    """Whether others may read the file at ``path`` (inline secrets there are warned about)."""
    if not path:
        return False
    try:
        return bool(os.stat(path).st_mode & 0o004)
    except OSError:
        return False
