"""``watch --metrics-listen`` and ``check --textfile`` as processes: real HTTP scrapes, a real
textfile, promtool on both, and the one-line exit 3 for an address or directory that cannot be
used."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from cli_helpers import CALM_THRESHOLDS, run_cli, spawn_cli
from prom_tools import assert_clean, require
from prometheus_client.parser import text_string_to_metric_families

CLUSTER = CALM_THRESHOLDS + (
    "nodes:\n  - name: here\n    host: localhost\n    gpus: 0\n"
    "  - name: gone\n    host: 127.0.0.1\n    port: {port}\n    transport: ssh\n"
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_cluster(directory: Path) -> None:
    (directory / "cluster.yaml").write_text(CLUSTER.replace("{port}", str(closed_port())))


def values(text: str, metric: str) -> dict[str, float]:
    """``metric``'s samples by their ``node`` label."""
    return {
        s.labels.get("node", ""): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == metric
    }


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        return answer.read().decode()


def wait_for_line(proc: subprocess.Popen[str], needle: str) -> str:
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # the process's own deadline bounds this (pytest-timeout)
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} not in {seen}")


def test_check_textfile_is_written_whole_and_passes_promtool(tmp_path: Path):
    write_cluster(tmp_path)
    out = tmp_path / "textfile"
    out.mkdir()
    result = run_cli("check", "--no-record", "--textfile", str(out), cwd=tmp_path)
    assert result.returncode == 2, result.stderr  # the unreachable node: CRITICAL, as before
    assert [p.name for p in out.iterdir()] == ["ugro_health.prom"]  # no temporary left
    text = (out / "ugro_health.prom").read_text()
    assert_clean(text)
    assert values(text, "ugro_health_node_up") == {"here": 1.0, "gone": 0.0}
    assert values(text, "ugro_health_node_gpus_expected") == {"here": 0.0}
    assert (out / "ugro_health.prom").stat().st_mode & 0o777 == 0o644


def test_check_textfile_into_a_missing_directory_is_one_line_before_any_poll(tmp_path: Path):
    write_cluster(tmp_path)
    result = run_cli("check", "--textfile", str(tmp_path / "nope"), cwd=tmp_path)
    assert result.returncode == 3
    assert result.stderr == f"ugro-health: --textfile {tmp_path}/nope: not a directory\n"
    assert not (tmp_path / "state").exists()  # nothing was polled or recorded


def test_check_textfile_of_a_subset_is_refused(tmp_path: Path):
    write_cluster(tmp_path)
    out = tmp_path / "textfile"
    out.mkdir()
    result = run_cli("check", "--nodes", "here", "--textfile", str(out), cwd=tmp_path)
    assert result.returncode == 3 and "cannot take --nodes" in result.stderr
    assert list(out.iterdir()) == []


def test_watch_serves_metrics_and_a_scrape_never_polls(tmp_path: Path):
    write_cluster(tmp_path)
    port = closed_port()
    proc = spawn_cli(
        "watch", "--interval", "3600", "--metrics-listen", f"127.0.0.1:{port}", cwd=tmp_path
    )
    try:
        assert f"metrics on http://127.0.0.1:{port}/metrics" in wait_for_line(proc, "metrics on")
        wait_for_line(proc, " cycle 1: ")
        first = scrape(port)
        assert_clean(first)
        assert values(first, "ugro_health_node_up") == {"here": 1.0, "gone": 0.0}
        assert values(first, "ugro_health_node_status")  # one series per status and node
        polled = values(first, "ugro_health_node_last_poll_timestamp_seconds")
        for _ in range(20):
            again = scrape(port)
        # Twenty scrapes later: still the one cycle, the same polls.
        assert values(again, "ugro_health_cycles_total") == {"": 1.0}
        assert values(again, "ugro_health_node_last_poll_timestamp_seconds") == polled
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    with pytest.raises(OSError):  # the listener went with it
        scrape(port)


@pytest.mark.parametrize(
    ("listen", "why"),
    [
        ("127.0.0.1:{busy}", "cannot listen on 127.0.0.1:{busy} for metrics: the address is "
         "already in use"),
        ("192.0.2.1:9835", "cannot listen on 192.0.2.1:9835 for metrics: no interface of this "
         "host has that address"),
        ("127.0.0.1:http", "--metrics-listen '127.0.0.1:http': the port must be a number"),
        ("127.0.0.1:70000", "--metrics-listen '127.0.0.1:70000': the port must be 1-65535"),
    ],
)  # fmt: skip
def test_an_address_that_cannot_be_bound_is_one_line_and_exit_3(
    tmp_path: Path, listen: str, why: str
):
    write_cluster(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = run_cli(
            "watch", "--headless", "--metrics-listen", listen.format(busy=port), cwd=tmp_path
        )
    assert result.returncode == 3
    assert result.stderr == f"ugro-health: {why.format(busy=port)}\n"


def test_node_exporter_reads_the_textfile(tmp_path: Path):
    """The real node_exporter's textfile collector takes the file without an error."""
    binary = require("prometheus-node-exporter")
    write_cluster(tmp_path)
    out = tmp_path / "textfile"
    out.mkdir()
    run_cli("check", "--no-record", "--textfile", str(out), cwd=tmp_path)
    port = closed_port()
    exporter = subprocess.Popen(
        [binary, "--collector.disable-defaults", "--collector.textfile",
         f"--collector.textfile.directory={out}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        text = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not text:
            try:
                text = scrape(port)
            except OSError:
                time.sleep(0.2)
    finally:
        exporter.terminate()
        exporter.wait(timeout=30)
    assert values(text, "node_textfile_scrape_error") == {"": 0.0}
    assert values(text, "ugro_health_node_up") == {"here": 1.0, "gone": 0.0}
