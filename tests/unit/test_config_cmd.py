"""``config validate``, ``config show`` and ``config init`` through the real entry point."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest
import yaml
from cli_helpers import run_cli

from ugro_health.cli.config_init import node_entries, ssh_config_hosts

VALID = "nodes:\n  - name: here\n    host: localhost\n  - gpu[01-02]\n"
BROKEN = (
    "nodes:\n  - name: a\n    prot: 22\n  - name: b\n    port: twenty\nssh:\n  max_workers: 0\n"
)


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """A HOME of our own (with an empty ~/.ssh) so the real ~/.ssh/config never leaks in."""
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    return {"HOME": str(tmp_path / "home"), "USER": "tester", "LOGNAME": "tester"}


def test_validate_ok_counts_expanded_nodes(tmp_path: Path):
    (tmp_path / "cluster.yaml").write_text(VALID)
    result = run_cli("config", "validate", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "cluster.yaml: OK, 3 nodes\n")


def test_validate_lists_every_problem_one_per_line(tmp_path: Path):
    (tmp_path / "bad.yaml").write_text(BROKEN)
    result = run_cli("config", "validate", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 3
    assert result.stdout.splitlines() == [
        "bad.yaml:3: nodes[0].prot: unknown key (did you mean `port`?)",
        "bad.yaml:5: nodes[1].port: must be an integer, not 'twenty'",
        "bad.yaml:7: ssh.max_workers: must be at least 1",
    ]
    assert "3 problems" in result.stderr


def test_validate_takes_the_file_config_finds(tmp_path: Path):
    (tmp_path / "elsewhere.yaml").write_text(BROKEN)
    by_env = run_cli(
        "config", "validate", cwd=tmp_path, env={"UGRO_HEALTH_CONFIG": "elsewhere.yaml"}
    )
    by_option = run_cli("--config", "elsewhere.yaml", "config", "validate", cwd=tmp_path)
    for result in (by_env, by_option):
        assert result.returncode == 3 and result.stdout.startswith("elsewhere.yaml:3:")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("config", "validate", "nope.yaml"), "nope.yaml: no such file"),
        (("config", "validate"), "no cluster file found"),
    ],
)
def test_validate_without_a_file_is_one_line_exit_3(tmp_path: Path, args, message):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 3 and result.stdout == ""
    assert message in result.stderr and len(result.stderr.splitlines()) == 1


def test_validate_invalid_yaml_is_one_problem(tmp_path: Path):
    (tmp_path / "cluster.yaml").write_text("nodes: [\n  - name: a\n")
    result = run_cli("config", "validate", cwd=tmp_path)
    assert result.returncode == 3
    assert len(result.stdout.splitlines()) == 1 and "invalid YAML" in result.stdout


def test_init_writes_a_file_that_validates(tmp_path: Path, home):
    hosts = ("gpu1", "gpu[02-04]", "my_box", "10.0.0.5", "fe80::1")
    result = run_cli("config", "init", *hosts, cwd=tmp_path, env=home)
    assert result.returncode == 0, result.stderr
    checked = run_cli("config", "validate", cwd=tmp_path)
    assert (checked.returncode, checked.stdout) == (0, "cluster.yaml: OK, 7 nodes\n")
    nodes = yaml.safe_load((tmp_path / "cluster.yaml").read_text())["nodes"]
    assert nodes[:4] == [{"name": h} for h in hosts[:4]]
    assert nodes[4] == {"name": "fe80-1", "host": "fe80::1"}  # sanitized name, host kept


def test_init_refuses_to_overwrite_without_force(tmp_path: Path, home):
    target = tmp_path / "cluster.yaml"
    target.write_text("mine\n")
    refused = run_cli("config", "init", "gpu1", cwd=tmp_path, env=home)
    assert refused.returncode == 3 and len(refused.stderr.splitlines()) == 1
    assert "--force" in refused.stderr and target.read_text() == "mine\n"
    forced = run_cli("config", "init", "gpu1", "--force", cwd=tmp_path, env=home)
    assert forced.returncode == 0 and "name: gpu1" in target.read_text()


def test_init_without_hosts_is_this_machine_in_process(tmp_path: Path, home):
    out = tmp_path / "sub.yaml"
    assert run_cli("config", "init", "--output", str(out), cwd=tmp_path, env=home).returncode == 0
    shown = run_cli("--config", str(out), "config", "show", "--json", cwd=tmp_path, env=home)
    (node,) = json.loads(shown.stdout)["nodes"]
    assert node["connect"] == "local (in-process)"


def test_init_from_ssh_config_skips_patterns(tmp_path: Path, home):
    ssh = Path(home["HOME"]) / ".ssh"
    (ssh / "config").write_text(
        "# hosts\nHost gpu1 gpu2\n  User ollie\nHost *.corp !bastion\n  User x\n"
        "Host=bastion\nInclude conf.d/*\nMatch host gpu1\n  Port 2\n"
    )
    (ssh / "conf.d").mkdir()
    (ssh / "conf.d" / "lab").write_text('Host "lab-box" gpu1\n')
    result = run_cli("config", "init", "--from-ssh-config", "-o", "-", cwd=tmp_path, env=home)
    assert result.returncode == 0, result.stderr
    names = [n["name"] for n in yaml.safe_load(result.stdout)["nodes"]]
    assert names == ["gpu1", "gpu2", "bastion", "lab-box"]


def test_init_from_an_empty_ssh_config_fails(tmp_path: Path, home):
    (Path(home["HOME"]) / ".ssh" / "config").write_text("Host *\n  User x\n")
    result = run_cli("config", "init", "--from-ssh-config", cwd=tmp_path, env=home)
    assert result.returncode == 3 and "no concrete Host" in result.stderr
    assert not (tmp_path / "cluster.yaml").exists()


def test_node_entries_sanitize_and_skip():
    entries, skipped = node_entries(["ok", "my host", "[::1]", "a@b", "ok", "x.y:2"])
    assert [(e.name, e.host) for e in entries] == [("ok", None), ("1", "[::1]"), ("x.y-2", "x.y:2")]
    assert skipped == [
        "skipping 'my host': not a host name",
        "skipping 'a@b': not a host name",
        "skipping 'ok': given twice",
    ]


def test_node_entries_skip_a_host_an_earlier_range_or_name_already_gives():
    entries, skipped = node_entries(["gpu[01-03]", "gpu02", "gpu[03-05]", "x.y:2", "x.y-2"])
    # an overlapping range keeps the nodes nothing earlier gives
    assert [e.name for e in entries] == ["gpu[01-03]", "gpu[04-05]", "x.y-2"]
    assert skipped == [
        "skipping 'gpu02': node 'gpu02' already comes from 'gpu[01-03]'",
        "keeping 'gpu[04-05]' of 'gpu[03-05]': gpu03 already comes from 'gpu[01-03]'",
        "skipping 'x.y-2': node 'x.y-2' already comes from 'x.y:2'",
    ]


def test_init_with_a_host_inside_a_range_writes_a_valid_file(tmp_path: Path, home):
    result = run_cli("config", "init", "-o", "-", "gpu[01-03]", "gpu02", cwd=tmp_path, env=home)
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "ugro-health: warning: skipping 'gpu02': node 'gpu02' already comes from 'gpu[01-03]'\n"
    )
    assert "- name: gpu[01-03]" in result.stdout and "gpu02" not in result.stdout


def test_ssh_config_include_loop_terminates(tmp_path: Path):
    config = tmp_path / "config"
    config.write_text(f"Host a\nInclude {config}\n")
    with pytest.raises(ValueError, match="too many recursive configuration includes"):
        ssh_config_hosts(config)  # ssh itself refuses such a file
    assert ssh_config_hosts(tmp_path / "missing") == []


SHOW = """\
defaults:
  python: /opt/py/bin/python3
ssh:
  system_ssh_config: ""  # this machine's /etc/ssh/ssh_config would add its own values
thresholds:
  gpu_temp_warn_c: 75
nodes:
  - name: here
    host: localhost
  - name: gpu1
  - name: gpu2
    user: admin
    port: 2200
"""


def test_show_json_fills_defaults_and_resolves_ssh_config(tmp_path: Path, home):
    ssh = Path(home["HOME"]) / ".ssh"
    (ssh / "config").write_text(
        "Host gpu*\n  HostName %h.lab\n  User ollie\n  Port 2222\n"
        "  IdentityFile ~/.ssh/lab_key\n  ProxyJump jump.lab\n"
    )
    (tmp_path / "cluster.yaml").write_text(SHOW)
    result = run_cli("config", "show", "--json", cwd=tmp_path, env=home)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["source"] == "cluster.yaml"
    assert doc["thresholds"]["gpu_temp_warn_c"] == 75
    assert doc["thresholds"]["gpu_temp_crit_c"] == 85  # default filled in
    assert doc["ssh"]["max_workers"] == 32 and doc["watch"]["failure_threshold"] == 3
    here, gpu1, gpu2 = doc["nodes"]
    assert here["connect"] == "local (in-process)"
    assert gpu1["python"] == "/opt/py/bin/python3"
    connect = gpu1["connect"]
    assert {k: connect[k] for k in ("host", "port", "user", "identity_files", "proxy_jump")} == {
        "host": "gpu1.lab",
        "port": 2222,
        "user": "ollie",
        "identity_files": [str(ssh / "lab_key")],
        "proxy_jump": "jump.lab",
    }
    me = pwd.getpwuid(os.getuid()).pw_name  # as ssh: the passwd name, not $USER ("tester")
    assert connect["via"] == [f"{me}@jump.lab:22"]  # the jump host resolved in turn
    assert connect["user_known_hosts"] == [f"{ssh}/known_hosts", f"{ssh}/known_hosts2"]
    assert connect["strict_host_key_checking"] == "ask" and connect["proxy_command"] is None
    where = f"{ssh}/config"
    assert connect["set_by"] == {
        "hostname": f"{where}:2",
        "user": f"{where}:3",
        "port": f"{where}:4",
        "identityfile": f"{where}:5",
        "proxyjump": f"{where}:6",
    }
    assert (gpu2["connect"]["user"], gpu2["connect"]["port"]) == ("admin", 2200)


def test_show_reads_the_system_file_after_the_users_first_value_wins(tmp_path: Path, home):
    ssh = Path(home["HOME"]) / ".ssh"
    (ssh / "config").write_text("Host gpu*\n  User ollie\n")
    system = tmp_path / "etc_ssh_config"
    system.write_text(
        "Host *\n  SendEnv LANG LC_*\n  GSSAPIAuthentication yes\n"
        "  User sysuser\n  Port 2200\n  HashKnownHosts yes\n"
    )
    cluster = f"ssh:\n  system_ssh_config: {system}\nnodes:\n  - name: gpu1\n  - name: db1\n"
    (tmp_path / "cluster.yaml").write_text(cluster)
    result = run_cli("config", "show", "--json", cwd=tmp_path, env=home)
    assert result.returncode == 0, result.stderr
    gpu1, db1 = (node["connect"] for node in json.loads(result.stdout)["nodes"])
    assert (gpu1["user"], gpu1["port"], db1["user"], db1["port"]) == (
        "ollie",
        2200,
        "sysuser",
        2200,
    )
    assert gpu1["set_by"] == {
        "user": f"{ssh}/config:2",  # the user's file is read first: its value wins
        "port": f"{system}:5",
        "hashknownhosts": f"{system}:6",
    }
    assert db1["set_by"]["user"] == f"{system}:4"


def test_validate_refuses_a_relative_system_ssh_config(tmp_path: Path):
    (tmp_path / "cluster.yaml").write_text("ssh:\n  system_ssh_config: etc/ssh_config\n")
    result = run_cli("config", "validate", cwd=tmp_path)
    assert result.returncode == 3
    assert "ssh.system_ssh_config: must be an absolute path" in result.stdout


def test_show_text_is_yaml_with_the_same_content(tmp_path: Path, home):
    (tmp_path / "cluster.yaml").write_text(SHOW)
    text = run_cli("config", "show", cwd=tmp_path, env=home)
    as_json = run_cli("config", "show", "--json", cwd=tmp_path, env=home)
    assert text.returncode == 0 and text.stdout.startswith("# Effective configuration from")
    assert yaml.safe_load(text.stdout) == json.loads(as_json.stdout)
    gpu1 = json.loads(as_json.stdout)["nodes"][1]["connect"]
    assert (gpu1["host"], gpu1["port"]) == ("gpu1", 22)
    assert gpu1["user"] == pwd.getpwuid(os.getuid()).pw_name


def test_show_without_a_file_is_the_built_in_default(tmp_path: Path, home):
    result = run_cli("config", "show", "--json", cwd=tmp_path, env=home)
    doc = json.loads(result.stdout)
    assert doc["source"] is None and doc["nodes"][0]["connect"] == "local (in-process)"


def test_show_with_a_broken_file_is_one_line_exit_3(tmp_path: Path, home):
    (tmp_path / "cluster.yaml").write_text(BROKEN)
    result = run_cli("config", "show", cwd=tmp_path, env=home)
    assert result.returncode == 3 and result.stdout == ""
    assert result.stderr.startswith("ugro-health: cluster.yaml:3: nodes[0].prot: unknown key")


def test_show_takes_a_path_like_validate(tmp_path: Path, home):
    other = tmp_path / "elsewhere" / "lab.yaml"
    other.parent.mkdir()
    other.write_text(SHOW)
    result = run_cli("config", "show", "--json", str(other), cwd=tmp_path, env=home)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["source"] == str(other) and [n["name"] for n in doc["nodes"]][1] == "gpu1"
    missing = run_cli("config", "show", str(tmp_path / "nope.yaml"), cwd=tmp_path, env=home)
    assert missing.returncode == 3 and "nope.yaml" in missing.stderr
