"""A real Prometheus server on loopback for the export tests, and a GPU node for the sshd rig.

``PrometheusServer`` runs Debian's ``prometheus`` with a throw-away TSDB, scraping every second
and evaluating rules every second, and answers PromQL through the HTTP API. ``gpu_python``
gives a rig node an ``nvidia-smi`` that replays the H100 recording
(``tests/fixtures/probe/fake_nvidia_smi.py``): the real probe reads it over SSH, as on a GPU
node (there is no GPU here).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from sshd_rig import REMOTE_PYTHON, SshdRig, free_port

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "probe"


def gpu_python(rig: SshdRig, name: str) -> str:
    """A ``python`` for a rig node that puts a recorded ``nvidia-smi`` first on its PATH."""
    bin_dir = Path(tempfile.mkdtemp(prefix=f"gpu-{name}-", dir=rig.root))
    bin_dir.chmod(0o755)  # the rig's login user runs it
    for fixture in FIXTURES.iterdir():
        shutil.copy(fixture, bin_dir / fixture.name)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f'#!/bin/sh\nexec {REMOTE_PYTHON} {bin_dir}/fake_nvidia_smi.py "$@"\n')
    python = bin_dir / "python3"
    python.write_text(f'#!/bin/sh\nPATH={bin_dir}:$PATH exec {REMOTE_PYTHON} "$@"\n')
    for path in (*bin_dir.iterdir(),):
        path.chmod(0o755)
    return str(python)


class PrometheusServer:
    def __init__(self, binary: str, config: dict[str, Any], directory: Path) -> None:
        self.port = free_port()
        config_file = directory / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.log = directory / "prometheus.log"
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url("/-/ready"), timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus did not become ready")

    def url(self, path: str, **params: str) -> str:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return f"http://127.0.0.1:{self.port}{path}{query}"

    def api(self, path: str, **params: str) -> Any:
        with urllib.request.urlopen(self.url(f"/api/v1/{path}", **params), timeout=30) as answer:
            doc = json.load(answer)
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector (a scalar comes back as one sample without labels)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def by_node(self, expr: str) -> dict[str, float]:
        return {r["metric"].get("node", ""): float(r["value"][1]) for r in self.query(expr)}

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
