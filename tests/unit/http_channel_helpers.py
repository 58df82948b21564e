"""Notifications and channel configurations for the webhook and Slack channel tests.

Channel configurations go through the real cluster.yaml parser (``parse_config``), so a test
sees the options exactly as the registry will hand them over, defaults filled in.
"""

from __future__ import annotations

from typing import Any

from ugro_health.config import parse_config
from ugro_health.config_notify import ChannelConfig
from ugro_health.notify.base import AlertNotice, Notification

T0 = 1796302920.0  # 2026-12-03T13:02:00Z


def channel(**keys: Any) -> ChannelConfig:
    """The one channel of a cluster.yaml whose ``notify.channels`` holds ``keys``."""
    import yaml

    doc = {"nodes": ["gpu1"], "notify": {"cluster": "prod", "channels": [keys]}}
    text = yaml.safe_dump(doc)
    (config,) = parse_config(text).notify.channels
    return config


def alert(node: str = "gpu1", **fields: Any) -> AlertNotice:
    values: dict[str, Any] = {
        "code": "gpu_temp_critical",
        "severity": "critical",
        "message": "GPU 0 temperature 91 °C",
        "state": "firing",
        "starts_at": T0,
        "value": 91.0,
        "gpu": 0,
    }
    values.update(fields)
    return AlertNotice(node=node, **values)


def notification(*alerts: AlertNotice, **fields: Any) -> Notification:
    values: dict[str, Any] = {
        "id": "5f0c2a9e-6d1b-4c47-9a51-0d7d2f3c8b11",
        "cluster": "prod",
        "created_at": T0 + 61,
        "alerts": alerts or (alert(),),
    }
    values.update(fields)
    return Notification(**values)


def documented_verify() -> Any:
    """The receiver's ``verify()`` exactly as docs/notify-webhook.md prints it."""
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "notify-webhook.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    (source,) = [block for block in blocks if "def verify(" in block]
    scope: dict[str, Any] = {}
    exec(compile(source, str(doc), "exec"), scope)
    return scope["verify"]
