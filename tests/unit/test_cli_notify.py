"""``alerts:``/``notify:`` in cluster.yaml, ``silence`` and ``notify`` through the real entry point."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_helpers import run_cli

from ugro_health.config import ConfigError, parse_config, validate_config

BASE = "nodes:\n  - name: here\n    host: localhost\n"


def _problems(text: str) -> list[str]:
    return [p.one_line() for p in validate_config(BASE + text, "c.yaml")]


def test_a_full_notify_section_parses_with_defaults_filled_in():
    config = parse_config(
        BASE
        + "alerts: {fire_after: {warning: 3}, repeat_interval: 2h, flap_window: 10m}\n"
        + "notify:\n  cluster: prod\n  check_wait: 5s\n  channels:\n"
        + "    - {name: hook, type: webhook, url: 'https://h.example/x', codes: 'gpu_*,xid_*'}\n"
        + "    - {name: am, type: alertmanager, urls: ['http://a:9093'], resend_interval: 2m}\n"
    )
    assert config.alerts.fire_after == {"critical": 1, "warning": 3, "info": 1}
    assert (config.alerts.repeat_interval_s, config.alerts.flap_window_s) == (7200.0, 600.0)
    hook, am = config.notify.channels
    assert (hook.min_severity, hook.codes, hook.send_resolved) == (
        "warning",
        ("gpu_*", "xid_*"),
        True,
    )
    assert hook.options["timeout"] == 10.0 and hook.options["tls_verify"] is True
    assert am.options["resend_interval"] == 120.0
    assert (config.notify.cluster, config.notify.check_wait_s) == ("prod", 5.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "notify:\n  channels:\n    - {name: x, type: pager}\n",
            "c.yaml:6: notify.channels[0].type: unknown channel type 'pager'",
        ),
        (
            "notify:\n  channels:\n    - {name: x, type: webhook}\n",
            "c.yaml:6: notify.channels[0].url: required for a webhook channel",
        ),
        (
            "notify:\n  channels:\n    - name: x\n      type: slack\n      url: {env: S}\n"
            "      nodes: ['gpu[1']\n",
            "c.yaml:9: notify.channels[0].nodes: bad glob 'gpu[1': unclosed [",
        ),
        (
            "notify:\n  channels:\n    - {name: x, type: webhook, url: 'ftp://h/x'}\n",
            "c.yaml:6: notify.channels[0].url: must be an http:// or https:// URL",
        ),
        (
            "notify:\n  channels:\n    - {name: x, type: exec, command: [a], min_severity: loud}\n",
            "c.yaml:6: notify.channels[0].min_severity: must be one of info, warning, critical",
        ),
        ("alerts:\n  resolve_after: 0\n", "c.yaml:5: alerts.resolve_after: must be at least 1"),
        (
            "alerts:\n  repeat_interval: soon\n",
            "c.yaml:5: alerts.repeat_interval: must be a duration",
        ),
    ],
)
def test_configuration_mistakes_name_file_line_and_key(text: str, expected: str):
    problems = _problems(text)
    assert problems and problems[0].startswith(expected), problems
    with pytest.raises(ConfigError):
        parse_config(BASE + text)


def test_duplicate_channel_names_are_refused():
    text = "notify:\n  channels:\n" + "    - {name: x, type: exec, command: [a]}\n" * 2
    assert any("duplicate name 'x'" in p for p in _problems(text))


def test_config_validate_exits_3_on_a_bad_channel(tmp_path: Path):
    (tmp_path / "cluster.yaml").write_text(
        BASE + "notify:\n  channels:\n    - {name: x, type: sms}\n"
    )
    result = run_cli("config", "validate", cwd=tmp_path)
    assert result.returncode == 3
    assert "cluster.yaml:6: notify.channels[0].type: unknown channel type 'sms'" in result.stdout


SECRET_CONFIG = (
    BASE
    + "notify:\n  channels:\n"
    + "    - {name: chat, type: slack, url: 'https://hooks.slack.example/T0/B0/inline-token'}\n"
    + "    - {name: mail, type: email, host: smtp, from: a@b.c, to: [d@e.f], username: u,"
    + " password: {env: SMTP_PASSWORD}}\n"
)


def test_config_show_never_prints_a_secret(tmp_path: Path):
    (tmp_path / "cluster.yaml").write_text(SECRET_CONFIG)
    os.chmod(tmp_path / "cluster.yaml", 0o600)
    result = run_cli("config", "show", "--json", cwd=tmp_path, env={"SMTP_PASSWORD": "hunter2"})
    assert result.returncode == 0, result.stderr
    assert "inline-token" not in result.stdout and "hunter2" not in result.stdout
    chat, mail = json.loads(result.stdout)["notify"]["channels"]
    assert chat["url"] == "<secret, inline>"
    assert mail["password"] == "<secret from $SMTP_PASSWORD>"
    assert "readable by others" not in result.stderr  # 0600: no warning


def test_inline_secrets_in_a_world_readable_file_are_warned_about(tmp_path: Path):
    (tmp_path / "cluster.yaml").write_text(SECRET_CONFIG)
    os.chmod(tmp_path / "cluster.yaml", 0o644)
    result = run_cli("notify", "status", cwd=tmp_path)
    assert result.returncode == 0
    assert "readable by others and holds secrets inline (chat.url)" in result.stderr
    assert "inline-token" not in result.stderr + result.stdout


def test_silence_add_list_expire(tmp_path: Path):
    (tmp_path / "cluster.yaml").write_text(BASE)
    added = run_cli(
        "silence", "add", "--nodes", "here", "--code", "disk_*", "--for", "2h",
        "--comment", "disk swap", cwd=tmp_path,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    sid = added.stdout.split()[1].rstrip(":")
    listed = json.loads(run_cli("silence", "list", "--json", cwd=tmp_path).stdout)
    assert [(s["id"], s["nodes"], s["codes"], s["comment"], s["active"]) for s in listed] == [
        (sid, ["here"], ["disk_*"], "disk swap", True)
    ]
    assert 7190 < listed[0]["ends_at"] - listed[0]["starts_at"] <= 7200
    expired = run_cli("silence", "expire", sid, cwd=tmp_path)
    assert (expired.returncode, expired.stdout) == (0, f"silence {sid}: expired\n")
    assert run_cli("silence", "list", cwd=tmp_path).stdout == "no silences in force\n"
    shown = json.loads(run_cli("silence", "list", "--all", "--json", cwd=tmp_path).stdout)
    assert [(s["id"], s["active"]) for s in shown] == [(sid, False)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("silence", "add", "--for", "1h", "--comment", "x"), "give --nodes or --code"),
        (("silence", "add", "--nodes", "a", "--for", "soon", "--comment", "x"), "not a duration"),
        (("silence", "add", "--nodes", "a[", "--for", "1h", "--comment", "x"), "bad glob 'a['"),
        (("silence", "expire", "nope"), "no such silence: nope"),
        (("notify", "test"), "no notification channels configured"),
    ],
)
def test_silence_and_notify_mistakes_exit_3_with_one_line(
    tmp_path: Path, args: tuple[str, ...], message: str
):
    (tmp_path / "cluster.yaml").write_text(BASE)
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 3
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_silence_on_no_configured_node_is_kept_with_a_warning(tmp_path: Path):
    (tmp_path / "cluster.yaml").write_text(BASE)
    result = run_cli(
        "silence", "add", "--nodes", "gpu9*", "--for", "1h", "--comment", "new rack", cwd=tmp_path
    )
    assert result.returncode == 0 and "matches no configured node" in result.stderr


def test_notify_test_reports_each_channel(tmp_path: Path):
    script = tmp_path / "receive.sh"
    script.write_text(f"#!/bin/sh\ncat > {tmp_path}/got.json\n")
    script.chmod(0o755)
    (tmp_path / "cluster.yaml").write_text(
        BASE
        + "notify:\n  cluster: lab\n  channels:\n"
        + f"    - {{name: good, type: exec, command: [{script}]}}\n"
        + "    - {name: bad, type: exec, command: [/bin/false]}\n"
    )
    result = run_cli("notify", "test", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ok      good (exec): accepted in")
    assert lines[1].startswith("FAILED  bad (exec):") and "exit" in lines[1]
    doc = json.loads((tmp_path / "got.json").read_text())
    assert (doc["schema"], doc["test"], doc["cluster"]) == (
        "ugro-health/notification/v1",
        True,
        "lab",
    )
    one = run_cli("notify", "test", "good", cwd=tmp_path)
    assert one.returncode == 0 and one.stdout.count("\n") == 1
    unknown = run_cli("notify", "test", "nope", cwd=tmp_path)
    assert unknown.returncode == 3 and "no channel named 'nope'" in unknown.stderr


HEADER_CONFIG = (
    BASE
    + "notify:\n  channels:\n"
    + "    - name: hook\n      type: webhook\n      url: https://h.example/x\n"
    + "      headers: {Authorization: 'Bearer TOPSECRET', X-Api-Token: {env: HOOK_TOKEN},"
    + " X-Team: gpu}\n"
)


def test_header_tokens_are_redacted_and_may_come_from_a_secret(tmp_path: Path):
    (tmp_path / "cluster.yaml").write_text(HEADER_CONFIG)
    os.chmod(tmp_path / "cluster.yaml", 0o644)
    result = run_cli("config", "show", "--json", cwd=tmp_path, env={"HOOK_TOKEN": "t0ken"})
    assert result.returncode == 0, result.stderr
    assert "TOPSECRET" not in result.stdout and "t0ken" not in result.stdout
    [hook] = json.loads(result.stdout)["notify"]["channels"]
    assert hook["headers"] == {
        "Authorization": "<redacted>",
        "X-Api-Token": "<redacted>",
        "X-Team": "gpu",
    }
    assert "holds secrets inline (hook.headers.Authorization)" in result.stderr


def test_a_secret_header_is_sent_with_its_value(monkeypatch: pytest.MonkeyPatch):
    from ugro_health.notify.webhook import WebhookChannel

    monkeypatch.setenv("HOOK_TOKEN", "t0ken")
    [channel] = parse_config(HEADER_CONFIG).notify.channels
    headers = WebhookChannel(channel).headers(b"{}")
    assert headers["X-Api-Token"] == "t0ken" and headers["Authorization"] == "Bearer TOPSECRET"


def test_credentials_in_a_url_are_refused():
    text = "notify:\n  channels:\n    - {name: x, type: webhook, url: 'https://u:pw@h.example/x'}\n"
    problems = _problems(text)
    assert problems == [
        "c.yaml:6: notify.channels[0].url: must not hold credentials (user:password@)"
    ]
    assert "pw" not in problems[0].split("(")[0]
