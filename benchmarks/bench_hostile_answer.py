"""What does a hostile answer cost? ``check`` against one node whose answer is huge but under
the output cap: a million empty GPUs, 60,000 failing mounts, every list and text far past its
limit. Wall time, peak RSS and bytes written to the store, per case, each in a fresh process.

The node is a real sshd on loopback (the integration tests' rig) whose ``python:`` is a stand-in
that prints the prepared answer. ``--tree PATH`` runs another checkout's ``ugro_health`` (e.g.
``git worktree add /tmp/old <commit>``) for before/after numbers.

Rerun: ``python benchmarks/bench_hostile_answer.py [--tree PATH] [--write-docs]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _cluster import ROOT, SshdRig
from _docs import write_section

DOC_SECTION = "## hostile answers"


def answers() -> dict[str, bytes]:
    long = "x" * 2000
    gpu = {"index": 0, "name": long, "processes": [{"pid": 1, "name": long}] * 300}
    return {
        "1e6 empty GPUs": b'{"ok": true, "gpus": [' + b"{}," * 999_999 + b"{}]}",
        "60k failing mounts": json.dumps(
            {"ok": True, "disks": [{"mount": f"/m{i}", "error": "hung"} for i in range(60_000)]}
        ).encode(),
        "lists and texts past limits": json.dumps(
            {"ok": True, "hostname": long, "gpus": [gpu] * 5, "errors": {"e": long}}
        ).encode(),
    }


def stand_in(rig: SshdRig, name: str, answer: bytes) -> Path:
    body = rig.root / f"{name}.answer"
    body.write_bytes(b"UGRO1 " + answer + b"\n")
    script = rig.root / f"{name}.sh"
    script.write_text(f"#!/bin/sh\ncat > /dev/null &\ncat {body}\n")
    script.chmod(0o755)
    return script


def run_case(rig: SshdRig, python: Path, tree: Path, json_out: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "cluster.yaml"
        config.write_text(
            f"defaults:\n  user: {rig.user}\n  identity_file: {rig.key}\n"
            f"ssh:\n  ssh_config: ''\n  known_hosts: {rig.known_hosts}\n"
            f"nodes:\n  - name: n1\n    host: 127.0.0.1\n"
            f"    port: {rig.nodes['bench'].port}\n    python: {python}\n"
        )
        env = {**os.environ, "PYTHONPATH": str(tree), "HOME": tmp}
        env.pop("SSH_AUTH_SOCK", None)
        state = Path(tmp) / "state"
        args = [sys.executable, "-m", "ugro_health", "--config", str(config)]
        args += ["--state-dir", str(state), "check", *(["--json"] if json_out else [])]
        started = time.monotonic()
        done = subprocess.run(args, env=env, capture_output=True, check=False)
        wall = time.monotonic() - started
        stored = sum(p.stat().st_size for p in state.rglob("*") if p.is_file())
        # The largest waited-for child so far: this process runs one case, and the rig's
        # sshd are still running (not yet waited for), so that is the check.
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        return {
            "wall_s": wall,
            "rss_mib": rss / 1024,
            "stored_kib": stored / 1024,
            "out_kib": len(done.stdout) / 1024,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout to run (ugro_health)")
    parser.add_argument("--case", help="run one case in this process (used internally)")
    parser.add_argument("--json-out", action="store_true", help="check --json")
    parser.add_argument("--write-docs", action="store_true")
    opts = parser.parse_args()
    if opts.case:
        rig = SshdRig.create()
        try:
            rig.start_node("bench")
            python = stand_in(rig, "case", answers()[opts.case])
            print(json.dumps(run_case(rig, python, opts.tree, opts.json_out)))
        finally:
            rig.close()
        return
    rows = []
    for case in answers():
        for json_out in (False, True):
            done = subprocess.run(
                [sys.executable, __file__, "--case", case, "--tree", str(opts.tree)]
                + (["--json-out"] if json_out else []),
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(done.stdout.strip().splitlines()[-1])
            command = "check --json" if json_out else "check"
            rows.append(
                f"| {case} | `{command}` | {result['wall_s']:.1f} | {result['rss_mib']:.0f}"
                f" | {result['stored_kib']:.0f} |"
            )
            print(rows[-1], flush=True)
    if opts.write_docs:
        write_section(
            DOC_SECTION,
            [
                "One node answering something huge under the 4 MiB output cap"
                " (`benchmarks/bench_hostile_answer.py`; `--tree` runs another checkout).",
                "",
                "| answer | command | wall s | peak RSS MiB | store KiB |",
                "| --- | --- | --- | --- | --- |",
                *rows,
            ],
        )


if __name__ == "__main__":
    main()
