"""Configuration: parsing, defaults, ranges, and one-line errors that name file, line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ugro_health.config import (
    ConfigError,
    default_config,
    expand_node_pattern,
    load_config,
    parse_config,
    validate_config,
)


def parse(text: str):
    return parse_config(textwrap.dedent(text), "cluster.yaml")


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_apply_and_nodes_override():
    config = parse(
        """
        defaults:
          user: ubuntu
          identity_file: ~/.ssh/id_ed25519
          gpus: 8
        nodes:
          - name: gpu-master
            host: localhost
          - name: gpu1
            host: 192.168.1.101
            user: ollie
            gpus: 1
            mounts: [/, /data]
            tags: [a100, rack1]
        """
    )
    master, gpu1 = config.nodes
    assert master.is_local and master.user == "ubuntu" and master.gpus == 8
    assert not gpu1.is_local
    assert (gpu1.user, gpu1.gpus, gpu1.mounts, gpu1.tags) == (
        "ollie",
        1,
        ("/", "/data"),
        ("a100", "rack1"),
    )
    assert gpu1.identity_file == "~/.ssh/id_ed25519"


def test_range_expands_in_order_with_padding():
    config = parse("nodes:\n  - name: gpu[08-11]\n    port: 2222\n")
    assert [n.name for n in config.nodes] == ["gpu08", "gpu09", "gpu10", "gpu11"]
    assert all(n.port == 2222 and n.host is None for n in config.nodes)
    assert config.nodes[0].ssh_host == "gpu08"


def test_plain_string_nodes_and_settings():
    config = parse(
        """
        ssh: {connect_timeout: 2, command_timeout: 7.5, max_workers: 4}
        thresholds: {gpu_temp_warn_c: 75, xid_critical: [79, 48]}
        history: {retention_hours: 6}
        nodes: [a, b]
        """
    )
    assert [n.name for n in config.nodes] == ["a", "b"]
    assert (config.ssh.connect_timeout, config.ssh.command_timeout, config.ssh.max_workers) == (
        2,
        7.5,
        4,
    )
    assert config.thresholds.gpu_temp_warn_c == 75 and config.thresholds.xid_critical == (79, 48)
    assert config.thresholds.gpu_temp_crit_c == 85  # untouched default
    assert config.history_retention_h == 6


def test_localhost_with_port_goes_over_ssh():
    config = parse(
        "nodes:\n  - name: a\n    host: localhost\n    port: 2222\n  - name: b\n    host: localhost\n    transport: ssh\n"
    )
    assert [n.is_local for n in config.nodes] == [False, False]


def test_localhost_behind_a_jump_host_is_that_hosts_localhost():
    config = parse("nodes:\n  - name: inner\n    host: localhost\n    proxy_jump: bastion\n")
    assert not config.nodes[0].is_local


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nodes: [\n", "cluster.yaml:2: invalid YAML"),
        (
            "nodes:\n  - name: a\n    prot: 22\n",
            "cluster.yaml:3: nodes[0].prot: unknown key (did you mean `port`?)",
        ),
        (
            "nodes:\n  - name: a\n  - name: b\n  - name: a\n",
            "cluster.yaml:4: nodes[2].name: duplicate node 'a'",
        ),
        (
            "nodes:\n  - name: a\n    port: twenty\n",
            "cluster.yaml:3: nodes[0].port: must be an integer, not 'twenty'",
        ),
        ("nodes:\n  - name: a\n    port: 70000\n", "port 70000 is out of range"),
        (
            "nodes:\n  - name: 'a;reboot'\n",
            "cluster.yaml:2: nodes[0].name: invalid node name 'a;reboot'",
        ),
        (
            "nodes:\n  - name: a\n    python: 'python3; rm -rf /'\n",
            "nodes[0].python: invalid interpreter path",
        ),
        ("nodes:\n  - name: a\n    mounts: [data]\n", "must be an absolute path"),
        (
            "ssh:\n  conect_timeout: 3\nnodes: [a]\n",
            "cluster.yaml:2: ssh.conect_timeout: unknown key (did you mean `connect_timeout`?)",
        ),
        (
            "thresholds:\n  gpu_temp_warn_c: hot\nnodes: [a]\n",
            "thresholds.gpu_temp_warn_c: must be a number, not 'hot'",
        ),
        ("nodes: []\n", "nodes: must be a non-empty list"),
        ("", "the file is empty"),
        ("- a\n- b\n", "the top level must be a mapping"),
        (
            "nodes:\n  - name: a\n    port: 22\n    port: 23\n",
            "cluster.yaml:4: nodes[0].port: duplicate key",
        ),
        (
            "nodes:\n  - name: gpu[01-03]\n    host: 10.0.0.1\n",
            "a node range cannot share one `host`",
        ),
        ("nodes:\n  - name: gpu[03-01\n", "invalid node range"),
        ("jobs:\n  match: ['(']\nnodes: [a]\n", "jobs.match: invalid pattern"),
        ("defaults:\n  name: x\nnodes: [a]\n", "defaults.name: unknown key"),
        ("nodes:\n  - host: a\n", "nodes[0]: a node needs a `name`"),
        ("nodes:\n  - name: a\n    transport: telnet\n", "must be one of auto, ssh, local"),
        (
            "nodes:\n  - name: a\n    gpus: yes\n",
            "nodes[0].gpus: must be an integer, not true/false",
        ),
    ],
)
def test_errors_are_one_line_with_file_line_and_key(text, expected):
    assert expected in error_of(text)


def test_error_in_defaults_points_at_defaults_line():
    message = error_of("defaults:\n  port: 99999\nnodes: [a, b]\n")
    assert message.startswith("cluster.yaml:2: defaults.port:")


def test_load_missing_and_unreadable(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"nodes: [\xff\xfe]\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(bad)


def test_select_by_globs():
    config = parse("nodes: [gpu01, gpu02, cpu01, gpu-master]\n")
    assert [n.name for n in config.select("gpu0*")] == ["gpu01", "gpu02"]
    assert [n.name for n in config.select("cpu*, gpu-master")] == ["cpu01", "gpu-master"]
    assert config.select("nothing*") == ()
    assert len(config.select(None)) == 4


def test_default_config_is_one_local_node():
    config = default_config()
    assert len(config.nodes) == 1 and config.nodes[0].is_local


def test_example_file_parses():
    example = Path(__file__).resolve().parents[2] / "cluster.example.yaml"
    config = load_config(example)
    assert len(config.nodes) >= 3


# --- validate_config: every problem, not just the first -------------------------------------

MANY_PROBLEMS = """\
defaults:
  port: 99999
  usr: x
ssh:
  conect_timeout: 3
  max_workers: 0
watch:
  active_interval_s: 0
nodes:
  - name: a
    prot: 22
  - name: b
    port: twenty
  - name: a
  - name: 'x;y'
  - 5
  - host: q
jobs:
  match: ['(']
bogus: 1
"""


def test_validate_reports_every_problem_in_line_order():
    problems = [p.one_line() for p in validate_config(MANY_PROBLEMS, "c.yaml")]
    assert problems == [
        "c.yaml:2: defaults.port: port 99999 is out of range 1-65535",
        "c.yaml:3: defaults.usr: unknown key (did you mean `user`?)",
        "c.yaml:5: ssh.conect_timeout: unknown key (did you mean `connect_timeout`?)",
        "c.yaml:6: ssh.max_workers: must be at least 1",
        "c.yaml:8: watch.active_interval_s: must be more than zero",
        "c.yaml:11: nodes[0].prot: unknown key (did you mean `port`?)",
        "c.yaml:13: nodes[1].port: must be an integer, not 'twenty'",
        "c.yaml:14: nodes[2].name: duplicate node 'a' (first at nodes[0])",
        "c.yaml:15: nodes[3].name: invalid node name 'x;y': use letters, digits, '.', '_' and '-'",
        "c.yaml:16: nodes[4]: a node must be a mapping with a `name`, not 5",
        "c.yaml:17: nodes[5]: a node needs a `name`",
        "c.yaml:19: jobs.match: invalid pattern '(': missing ), unterminated subpattern at position 0",
        "c.yaml:20: bogus: unknown key",
    ]


def test_parse_raises_only_the_problem_that_comes_first_in_the_file():
    text = "ssh:\n  max_workers: 0\nnodes:\n  - name: a\n    prot: 2\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    assert str(info.value) == "c.yaml:2: ssh.max_workers: must be at least 1"
    with pytest.raises(ConfigError) as info:
        parse_config(MANY_PROBLEMS, "c.yaml")
    assert str(info.value) == validate_config(MANY_PROBLEMS, "c.yaml")[0].one_line()


def test_validate_a_valid_file_and_the_example_have_no_problems():
    assert validate_config("nodes: [a, b]\n", "c.yaml") == []
    example = Path(__file__).resolve().parents[2] / "cluster.example.yaml"
    assert validate_config(example.read_text(), str(example)) == []


@pytest.mark.parametrize(
    "text", ["nodes: [\n  - name: a\n    prot: 2\n", "", "- a\n", "nodes: {a: [\n"]
)
def test_validate_stops_at_a_document_it_cannot_read(text):
    problems = validate_config(text, "c.yaml")
    assert len(problems) == 1 and problems[0].path == "c.yaml"


def test_validate_reports_a_bad_default_once_and_only_where_written():
    text = "defaults:\n  port: 99999\nnodes:\n  - a\n  - b\n  - name: c\n    port: 1\n"
    assert [p.one_line() for p in validate_config(text, "c.yaml")] == [
        "c.yaml:2: defaults.port: port 99999 is out of range 1-65535"
    ]


def test_validate_keeps_going_inside_a_node_and_across_a_range():
    text = (
        "nodes:\n"
        "  - name: gpu[01-03]\n"
        "    host: h\n"
        "    transport: telnet\n"
        "    mounts: [data]\n"
        "    gpus: -1\n"
    )
    keys = [(p.line, p.key) for p in validate_config(text, "c.yaml")]
    assert keys == [
        (3, "nodes[0].host"),
        (4, "nodes[0].transport"),
        (5, "nodes[0].mounts"),
        (6, "nodes[0].gpus"),
    ]


def test_duplicate_yaml_keys_and_non_scalar_keys_are_collected():
    text = "nodes:\n  - name: a\n    port: 22\n    port: 23\n    [x]: 1\n    pyton: p\n"
    problems = [p.one_line() for p in validate_config(text, "c.yaml")]
    assert problems == [
        "c.yaml:4: nodes[0].port: duplicate key",
        "c.yaml:5: nodes[0]: keys must be plain names",
        "c.yaml:6: nodes[0].pyton: unknown key (did you mean `python`?)",
    ]


def test_expand_node_pattern():
    assert expand_node_pattern("gpu[08-10]") == ["gpu08", "gpu09", "gpu10"]
    assert expand_node_pattern("solo") == ["solo"]
    for bad in ("a;b", "gpu[03-01", "my box"):
        with pytest.raises(ConfigError):
            expand_node_pattern(bad)


SETTINGS_THAT_BREAK_RUNS = """\
ssh:
  connect_timeout: 0
  command_timeout: 0.0
thresholds:
  gpu_temp_warn_c: 90
  gpu_temp_crit_c: 80
  disk_warn_pct: 20
  disk_crit_pct: 5
  mem_crit_pct: 70
  swap_warn_pct: 120
  score_warn: 101
nodes: [a]
"""


def test_validate_refuses_settings_that_break_runs():
    problems = [p.one_line() for p in validate_config(SETTINGS_THAT_BREAK_RUNS, "c.yaml")]
    assert problems == [
        "c.yaml:2: ssh.connect_timeout: must be more than zero",
        "c.yaml:3: ssh.command_timeout: must be more than zero",
        "c.yaml:5: thresholds.gpu_temp_warn_c: gpu_temp_warn_c (90) must not be above "
        "gpu_temp_crit_c (80)",
        "c.yaml:7: thresholds.disk_warn_pct: disk_warn_pct (20) must not be above disk_crit_pct (5)",
        "c.yaml:9: thresholds.mem_crit_pct: mem_warn_pct (90, the default) must not be above "
        "mem_crit_pct (70)",
        "c.yaml:10: thresholds.swap_warn_pct: must be a percentage, 0 to 100",
        "c.yaml:11: thresholds.score_warn: must be 0 to 100 (a score)",
    ]


def test_infinite_and_nan_numbers_are_refused():
    text = (
        "ssh:\n  connect_timeout: .inf\n  command_timeout: .Inf\n"
        "thresholds:\n  net_errors_warn_per_s: .nan\nnodes: [a]\n"
    )
    problems = [p.one_line() for p in validate_config(text, "c.yaml")]
    assert problems == [
        "c.yaml:2: ssh.connect_timeout: must be a finite number, not inf",
        "c.yaml:3: ssh.command_timeout: must be a finite number, not inf",
        "c.yaml:5: thresholds.net_errors_warn_per_s: must be a finite number, not nan",
    ]


def test_equal_warn_and_crit_and_the_bounds_themselves_are_valid():
    text = (
        "thresholds: {gpu_temp_warn_c: 85, gpu_temp_crit_c: 85, disk_warn_pct: 0,"
        " disk_crit_pct: 100, score_warn: 0}\nnodes: [a]\n"
    )
    assert validate_config(text, "c.yaml") == []
    assert validate_config("thresholds: {score_warn: 100}\nnodes: [a]\n", "c.yaml") == []


@pytest.mark.parametrize(
    "text", ["a: &a [*a]\nnodes: [x]\n", "nodes: &n\n  - name: a\n    tags: *n\n"]
)
def test_an_anchor_used_inside_itself_is_one_config_error(text):
    with pytest.raises(ConfigError, match=r"^c\.yaml:\d+: .*anchor") as info:
        parse_config(text, "c.yaml")
    assert "\n" not in str(info.value)
    (problem,) = validate_config(text, "c.yaml")
    assert problem.one_line() == str(info.value)


def test_yaml_nested_too_deeply_or_aliases_that_explode_are_one_config_error(monkeypatch):
    deep = "a: " + "[" * 5000 + "]" * 5000 + "\nnodes: [x]\n"
    assert error_of(deep) == "cluster.yaml: invalid YAML: nested too deeply"
    monkeypatch.setattr("ugro_health.config_yaml.MAX_VALUES", 1000)
    bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 4)
    )
    assert "more than 1,000 values once aliases are expanded" in error_of(bomb + "nodes: [x]\n")


def test_host_user_at_host_is_read_as_ssh_reads_it():
    config = parse(
        """
        defaults:
          user: ubuntu
        nodes:
          - name: gpu1
            host: bob@gpu1.example
          - name: gpu2
            host: bob@gpu2
            user: bob
        """
    )
    assert [(n.host, n.user) for n in config.nodes] == [("gpu1.example", "bob"), ("gpu2", "bob")]
    message = error_of(
        """
        nodes:
          - name: gpu1
            host: bob@gpu1
            user: alice
        """
    )
    assert "host 'bob@gpu1' names user 'bob' but user is 'alice'" in message
    assert "invalid user" in error_of("nodes:\n  - name: a\n    host: '@gpu1'\n")


def test_max_startups_defaults_below_sshds_and_must_be_at_least_1():
    assert parse_config("nodes: [{name: a}]\n", "c.yaml").ssh.max_startups == 8
    text = "ssh:\n  max_startups: 3\nnodes: [{name: a}]\n"
    assert parse_config(text, "c.yaml").ssh.max_startups == 3
    for bad, why in (("0", "must be at least 1"), ("many", "must be an integer, not 'many'")):
        with pytest.raises(ConfigError) as info:
            parse_config(f"ssh:\n  max_startups: {bad}\nnodes: [{{name: a}}]\n", "c.yaml")
        assert str(info.value) == f"c.yaml:2: ssh.max_startups: {why}"


def test_score_critical_is_a_score_and_not_above_score_warn():
    text = "thresholds:\n  score_warn: 60\n  score_critical: 65\nnodes: [a]\n"
    problems = [p.one_line() for p in validate_config(text, "c.yaml")]
    assert problems == [
        "c.yaml:3: thresholds.score_critical: score_critical (65) must not be above score_warn (60)"
    ]
    problems = [p.one_line() for p in validate_config(text.replace("65", "101"), "c.yaml")]
    assert problems == ["c.yaml:3: thresholds.score_critical: must be 0 to 100 (a score)"]
    config = parse_config("thresholds: {score_critical: 40}\nnodes: [a]\n")
    assert config.thresholds.score_critical == 40


def test_a_breaker_wait_above_its_maximum_is_refused_not_a_crash_in_watch():
    # Accepted before, then `watch` died with "internal error: ValueError" at its start.
    text = "watch:\n  reset_base_s: 3600\nnodes: [a]\n"
    problems = [p.one_line() for p in validate_config(text, "c.yaml")]
    assert problems == [
        "c.yaml:2: watch.reset_base_s: reset_base_s (3600) must not be above reset_max_s "
        "(300, the default)"
    ]
