"""``--shard I/N``: the assignment of nodes to shards (stable, complete, disjoint, balanced),
its parsing, and the CLI's selection and one-line errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from cli_helpers import CALM_THRESHOLDS, run_cli

from ugro_health.config import NodeConfig
from ugro_health.engine.shard import Shard, ShardError, parse_shard, shard_of, split

NAMES = [f"gpu{i:04d}" for i in range(1, 1001)]


def test_every_node_is_in_exactly_one_shard():
    for count in (1, 2, 3, 4, 7, 16):
        shards = split(NAMES, count)
        assert set(shards) == set(range(1, count + 1))
        flat = [name for names in shards.values() for name in names]
        assert sorted(flat) == sorted(NAMES)  # complete, and nobody twice
        for index, names in shards.items():
            assert all(Shard(index, count).owns(n) for n in names)
            assert not any(Shard(index % count + 1, count).owns(n) for n in names) or count == 1


def test_the_assignment_depends_on_the_name_alone():
    shuffled = NAMES[:]
    random.Random(7).shuffle(shuffled)
    before = {n: shard_of(n, 4) for n in NAMES}
    assert {n: shard_of(n, 4) for n in shuffled} == before  # config order does not matter
    grown = {n: shard_of(n, 4) for n in [*NAMES, *(f"new{i}" for i in range(200))]}
    assert {n: grown[n] for n in NAMES} == before  # adding nodes moves none of the others


# Computed once with BLAKE2b rendezvous hashing; a change here moves nodes between running
# shards on upgrade, so it must be deliberate (and said in the README).
GOLDEN = {"gpu0001": 2, "gpu0002": 4, "gpu0003": 2, "node1": 4, "a": 1}


def test_the_assignment_is_the_same_everywhere():
    # Not Python's hash() (randomised per process): fixed values, the same on every host.
    assert {n: shard_of(n, 4) for n in GOLDEN} == GOLDEN


def test_shards_are_roughly_balanced():
    for count in (2, 4, 8):
        sizes = [len(v) for v in split(NAMES, count).values()]
        mean = len(NAMES) / count
        assert all(abs(s - mean) < 0.25 * mean for s in sizes), sizes


def test_one_more_shard_moves_about_one_node_in_n():
    before = {n: shard_of(n, 4) for n in NAMES}
    after = {n: shard_of(n, 5) for n in NAMES}
    moved = [n for n in NAMES if before[n] != after[n]]
    assert all(after[n] == 5 for n in moved)  # only to the new shard
    assert 0.1 * len(NAMES) < len(moved) < 0.3 * len(NAMES)  # ~1/5, where mod N moves ~4/5


def test_select_keeps_config_order():
    nodes = [NodeConfig(name=n) for n in NAMES[:50]]
    picked = Shard(2, 3).select(nodes)
    assert [n.name for n in picked] == [n for n in NAMES[:50] if shard_of(n, 3) == 2]


@pytest.mark.parametrize("text", ["1/1", "2/4", " 4 / 4 ", "16/16"])
def test_parse_accepts_i_of_n(text: str):
    shard = parse_shard(text)
    assert shard.label == text.replace(" ", "")


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "2", "a/b", "1/2/3", "-1/2", "", "1/"])
def test_parse_refuses_anything_else(text: str):
    with pytest.raises(ShardError) as caught:
        parse_shard(text)
    message = str(caught.value)
    assert message.startswith("--shard ") and "\n" not in message


# --- the CLI ------------------------------------------------------------------------------


def write_local_cluster(home: Path, names: list[str]) -> None:
    nodes = "".join(f"  - name: {n}\n    transport: local\n" for n in names)
    (home / "cluster.yaml").write_text(CALM_THRESHOLDS + "nodes:\n" + nodes)


LOCAL = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]


def test_check_polls_only_its_shard_and_the_shards_cover_the_cluster(tmp_path: Path):
    write_local_cluster(tmp_path, LOCAL)
    seen: list[set[str]] = []
    for index in (1, 2):
        result = run_cli("check", "--no-record", "--json", "--shard", f"{index}/2", cwd=tmp_path)
        assert result.returncode in (0, 1), result.stderr
        seen.append({n["name"] for n in json.loads(result.stdout)["nodes"]})
        assert seen[-1] == {n for n in LOCAL if shard_of(n, 2) == index}
    assert seen[0] | seen[1] == set(LOCAL) and not seen[0] & seen[1]


def test_the_globs_select_then_the_shard_splits(tmp_path: Path):
    write_local_cluster(tmp_path, LOCAL)
    globs = "alpha,bravo,charlie,delta"
    owned = [n for n in globs.split(",") if shard_of(n, 2) == 1]
    assert owned  # the test's names give shard 1 some of these
    result = run_cli(
        "check", "--no-record", "--json", "--nodes", globs, "--shard", "1/2", cwd=tmp_path
    )
    assert {n["name"] for n in json.loads(result.stdout)["nodes"]} == set(owned)


@pytest.mark.parametrize("command", ["check", "watch"])
@pytest.mark.parametrize("bad", ["0/2", "3/2", "x"])
def test_a_bad_shard_is_one_line_exit_3(tmp_path: Path, command: str, bad: str):
    write_local_cluster(tmp_path, LOCAL)
    result = run_cli(command, "--shard", bad, cwd=tmp_path)
    assert result.returncode == 3
    assert result.stderr.startswith(f"ugro-health: --shard '{bad}'")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_shard_that_owns_no_node_is_an_error(tmp_path: Path):
    write_local_cluster(tmp_path, ["alpha"])
    empty = next(i for i in (1, 2, 3) if shard_of("alpha", 3) != i)
    result = run_cli("check", "--no-record", "--shard", f"{empty}/3", cwd=tmp_path)
    assert result.returncode == 3
    assert result.stderr.strip() == (
        f"ugro-health: --shard {empty}/3: no node of the 1 selected falls in this shard "
        "(fewer shards, or more nodes)"
    )


def test_check_textfile_under_a_shard_writes_the_shards_own_file(tmp_path: Path):
    write_local_cluster(tmp_path, LOCAL)
    out = tmp_path / "textfiles"
    out.mkdir()
    for index in (1, 2):
        result = run_cli("check", "--shard", f"{index}/2", "--textfile", str(out), cwd=tmp_path)
        assert result.returncode in (0, 1), result.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["ugro_health_shard_1_of_2.prom", "ugro_health_shard_2_of_2.prom"]
    nodes: list[str] = []
    for index, name in enumerate(files, 1):
        text = (out / name).read_text()
        assert f'ugro_health_cycle_duration_seconds{{shard="{index}/2"}}' in text
        nodes += [
            line.split('node="')[1].split('"')[0]
            for line in text.splitlines()
            if line.startswith("ugro_health_node_up{")
        ]
    assert sorted(nodes) == sorted(LOCAL)  # every node once across the two files


def test_api_check_takes_a_shard(tmp_path: Path):
    import ugro_health

    write_local_cluster(tmp_path, LOCAL)
    report = ugro_health.check(
        tmp_path / "cluster.yaml", shard="2/2", record=False, state_dir=tmp_path / "state"
    )
    assert {n.name for n in report.nodes} == {n for n in LOCAL if shard_of(n, 2) == 2}
    with pytest.raises(ValueError, match="expected I/N"):
        ugro_health.check(tmp_path / "cluster.yaml", shard="half", record=False)


def test_api_monitor_takes_a_shard(tmp_path: Path):
    import ugro_health

    write_local_cluster(tmp_path, LOCAL)
    monitor = ugro_health.HealthMonitor(
        tmp_path / "cluster.yaml", shard="1/2", state_dir=tmp_path / "state"
    )
    try:
        assert set(monitor.engine.nodes) == {n for n in LOCAL if shard_of(n, 2) == 1}
    finally:
        monitor.close()
    with pytest.raises(ValueError, match="shard 2/2 holds none of the 1 selected nodes"):
        only = next(n for n in LOCAL if shard_of(n, 2) == 1)
        ugro_health.HealthMonitor(
            tmp_path / "cluster.yaml", nodes=only, shard="2/2", state_dir=tmp_path / "s2"
        )
