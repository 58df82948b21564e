"""Configuration and state lookup order (DESIGN.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ugro_health.paths import find_config, state_dir


def test_config_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    xdg = tmp_path / "xdg"
    env = {"XDG_CONFIG_HOME": str(xdg)}
    assert find_config(None, env) is None  # nothing anywhere: built-in default
    (xdg / "ugro-health").mkdir(parents=True)
    (xdg / "ugro-health" / "cluster.yaml").write_text("nodes: [a]\n")
    assert find_config(None, env) == xdg / "ugro-health" / "cluster.yaml"
    (tmp_path / "cluster.yaml").write_text("nodes: [b]\n")
    assert find_config(None, env) == Path("cluster.yaml")
    env["UGRO_HEALTH_CONFIG"] = "/etc/ugro/c.yaml"
    assert find_config(None, env) == Path("/etc/ugro/c.yaml")
    assert find_config("~/x.yaml", env) == Path("~/x.yaml").expanduser()


def test_an_explicit_missing_file_is_returned_not_skipped(tmp_path: Path):
    assert find_config(str(tmp_path / "missing.yaml"), {}) == tmp_path / "missing.yaml"


def test_state_dir_order(tmp_path: Path):
    env = {"XDG_STATE_HOME": str(tmp_path / "xs")}
    assert state_dir(None, env) == tmp_path / "xs" / "ugro-health"
    env["STATE_DIRECTORY"] = "/var/lib/ugro-health:/var/lib/other"
    assert state_dir(None, env) == Path("/var/lib/ugro-health")
    env["UGRO_HEALTH_STATE_DIR"] = str(tmp_path / "env")
    assert state_dir(None, env) == tmp_path / "env"
    assert state_dir(str(tmp_path / "flag"), env) == tmp_path / "flag"


def test_state_dir_default_is_under_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert state_dir(None, {}) == tmp_path / ".local" / "state" / "ugro-health"
