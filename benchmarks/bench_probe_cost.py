"""What one probe costs its node: CPU of a cold probe against a bare interpreter's start.

For each interpreter (pyenv's 3.6, 3.8 and 3.11 by default) it measures, as the CPU (user +
system) of the child and everything it reaped (``RUSAGE_CHILDREN``), the median of many runs:

- a bare start: ``python -c pass`` (what the bootstrap's own ``-c`` costs; ``-S``/``-I`` are shown
  for reference, the bootstrap runs without them);
- a cold probe exactly as ``check`` runs it: ``python -c <BOOTSTRAP>`` with the control host's
  prelude (``probe_prelude()``: length, source) and one request on stdin, then EOF;
- a persistent probe's tick (``watch``): ``Probe.answer()`` of one request line (parse, sample,
  encode), N times in one process after a first answer, per answer;
- in-process (``check`` of the local node): loading the module and the first ``Probe().sample()``
  in a fresh process, measured inside it, compile excluded (an import reads the cached bytecode);
- a profile of where the cold probe's time goes: compile of what is sent, the module's body (its
  imports), then each part of a sample in turn, each the first of its kind in a fresh process.

The target (issue 17): a cold probe costs at most 20 ms of CPU beyond the bare start.
``--tree PATH`` measures another checkout (e.g. ``git worktree add /tmp/old <commit>``), its
probe and its prelude, for before/after numbers.

Rerun: ``python benchmarks/bench_probe_cost.py [--runs 40] [--ticks 50] [--tree PATH]
[--before OUTPUT --before-label TEXT] [--write-docs]`` (``--before``: what an earlier run,
e.g. with ``--tree``, printed, shown beside in the docs)
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _docs import write_section

DOC_SECTION = "## probe node-side cost"
TARGET_MS = 20.0
VERSIONS = ("3.6", "3.8", "3.11")
REPO = Path(__file__).resolve().parent.parent
# What `check` sends (engine.collect.probe_request for a node with the default mounts).
REQUEST = {
    "op": "sample",
    "mounts": ["/"],
    "window_s": 0.2,
    "subcheck_timeout_s": 3.0,
    "match": [],
    "max_output_bytes": 2000000,
}

# Runs on the measured interpreter (3.6 included): argv = probe source file, request (a Python
# literal), mode. Prints a dict literal of CPU milliseconds per stage (own + reaped children).
# It imports nothing the probe imports (json, re...) before measuring, so the module's body
# pays for them as on a node.
STAGES = r"""
import os, resource, sys
def cpu():
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
with open(sys.argv[1], "rb") as handle:
    src = handle.read()
req = eval(sys.argv[2])
mode = sys.argv[3]
out = {}
t = cpu(); code = compile(src, "ugro_probe", "exec"); out["compile"] = cpu() - t
ns = {"__name__": "ugro_probe"}
t = cpu(); exec(code, ns); out["module body (its imports)"] = cpu() - t
if mode == "inprocess":
    t = cpu(); ns["Probe"]().sample(req); out["first sample"] = cpu() - t
elif mode == "ticks":
    # A live probe's ticks: answer() parses the request line, samples, encodes the reply. The
    # window is 0 so that back-to-back ticks do not sleep (a tick's CPU does not depend on it).
    probe = ns["Probe"]()
    line = ns["json"].dumps(dict(req, window_s=0.0)).encode() + b"\n"
    probe.answer(line)
    t = cpu()
    for _ in range(int(sys.argv[4])):
        probe.answer(line)
    out["tick"] = (cpu() - t) / int(sys.argv[4])
else:
    errors = {}
    def stage(name, fn):
        t = cpu()
        try:
            fn()
        except Exception:
            pass
        out[name] = cpu() - t
    stage("cpu, memory, net, load, uptime", lambda: (ns["cpu_counters"](), ns["memory_usage"](),
          ns["net_counters"](), os.getloadavg(), ns["uptime_seconds"]()))
    stage("hostname, python, kernel", lambda: ns["Probe"]()._base_document(errors))
    stage("disk /", lambda: ns["disk_usage"]("/"))
    stage("kernel log (Xids)", lambda: ns["read_kernel_xids"](3.0))
    stage("/proc scan", lambda: ns["scan_processes"]([], [os.getpid()]))
    stage("GPU (NVML, else nvidia-smi)", lambda: (ns["nvml_init"](),
          ns["Probe"]()._smi_sample(3.0)))
    probe = ns["Probe"]()
    stage("one whole sample after these", lambda: probe.sample(dict(req, window_s=0.0)))
print(repr(dict((k, v * 1000.0) for k, v in out.items())))
"""


COMPILE = r"""
import resource, sys
def cpu():
    s = resource.getrusage(resource.RUSAGE_SELF)
    return s.ru_utime + s.ru_stime
with open(sys.argv[1], "rb") as handle:
    src = handle.read()
times = []
for _ in range(int(sys.argv[2])):
    t = cpu(); compile(src, "ugro_probe", "exec"); times.append(cpu() - t)
times.sort()
print(times[len(times) // 2] * 1000.0)
"""


def stripped(source: bytes) -> bytes:
    """``source`` without comments and docstrings (what stripping on the control host would
    send; only measured here: ``ast.unparse`` also drops the formatting)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    return ast.unparse(tree).encode()


def compile_ms(python: str, source: bytes, repeats: int = 20) -> float:
    """Median CPU of compiling ``source`` on ``python`` (warm: repeated in one process)."""
    with tempfile.NamedTemporaryFile(suffix=".py") as handle:
        handle.write(source)
        handle.flush()
        argv = [python, "-c", COMPILE, handle.name, str(repeats)]
        done = subprocess.run(argv, capture_output=True, text=True)
        return float(done.stdout) if done.returncode == 0 else float("nan")


def interpreters(versions: tuple[str, ...]) -> list[tuple[str, str]]:
    """(version, path) of pyenv's newest interpreter for each version."""
    root = Path(subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip())
    found = []
    for version in versions:
        dirs = sorted(root.glob(f"versions/{version}.*"), key=lambda p: p.name)
        if dirs:
            found.append((dirs[-1].name, str(dirs[-1] / "bin" / f"python{version}")))
    return found


def child_cpu_ms(argv: list[str], stdin: bytes = b"") -> float:
    """CPU of one child run (itself and what it reaped), in milliseconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, input=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return used * 1000.0


def median_ms(argv: list[str], runs: int, stdin: bytes = b"") -> float:
    child_cpu_ms(argv, stdin)  # warm the page cache
    return statistics.median(child_cpu_ms(argv, stdin) for _ in range(runs))


def paired_ms(
    base: tuple[list[str], bytes], other: tuple[list[str], bytes], runs: int
) -> tuple[float, float, float]:
    """Medians of two runs taken in turns, and of their differences: on a shared machine both
    of a pair see the same load, which the difference then leaves out."""
    child_cpu_ms(*base), child_cpu_ms(*other)  # warm the page cache
    pairs = [(child_cpu_ms(*base), child_cpu_ms(*other)) for _ in range(runs)]
    return (
        statistics.median(b for b, _ in pairs),
        statistics.median(o for _, o in pairs),
        statistics.median(o - b for b, o in pairs),
    )


def prelude_and_bootstrap(tree: Path) -> tuple[bytes, str]:
    """The control host's prelude and bootstrap, from ``tree``'s own code."""
    code = (
        "import sys;from ugro_health import probe;"
        "from ugro_health.transport.ssh_session import probe_prelude;"
        "sys.stdout.buffer.write(probe.BOOTSTRAP.encode()+b'\\0'+probe_prelude())"
    )
    env = dict(os.environ, PYTHONPATH=str(tree))
    # From the tree itself: `-c` puts the working directory first on sys.path.
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=env, cwd=tree, check=True
    ).stdout
    bootstrap, prelude = out.split(b"\0", 1)
    return prelude, bootstrap.decode()


def stages(python: str, source: Path, mode: str, runs: int, ticks: int = 0) -> dict[str, float]:
    """Medians of the per-stage CPU milliseconds over ``runs`` fresh processes."""
    samples: list[dict[str, float]] = []
    for _ in range(runs):
        argv = [python, "-c", STAGES, str(source), repr(REQUEST), mode, str(ticks)]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        samples.append(ast.literal_eval(out))
    return {key: statistics.median(s[key] for s in samples) for key in samples[0]}


def measure(python: str, tree: Path, runs: int, ticks: int) -> dict[str, object]:
    prelude, bootstrap = prelude_and_bootstrap(tree)
    one = json.dumps(REQUEST).encode() + b"\n"
    source = prelude.split(b"\n", 1)[1]
    with tempfile.NamedTemporaryFile(suffix=".py") as handle:
        handle.write(source)
        handle.flush()
        bare, cold, beyond = paired_ms(
            ([python, "-c", "pass"], b""), ([python, "-c", bootstrap], prelude + one), runs
        )
        result: dict[str, object] = {
            "bare": bare,
            "bare -S": median_ms([python, "-S", "-c", "pass"], max(5, runs // 4)),
            "bare -I": median_ms([python, "-I", "-c", "pass"], max(5, runs // 4)),
            "cold": cold,
            "beyond": beyond,
            "sent_bytes": len(prelude),
            "inprocess": stages(python, Path(handle.name), "inprocess", max(5, runs // 4)),
            "profile": stages(python, Path(handle.name), "profile", max(5, runs // 4)),
        }
        # Ticks sleep for their CPU window (nothing to measure against within 50 ms): few runs.
        plain = (tree / "ugro_health" / "probe.py").read_bytes()
        result["compile"] = {
            f"the module ({len(plain):,} bytes)": compile_ms(python, plain),
            f"without comments, docstrings ({len(stripped(plain)):,} bytes)": compile_ms(
                python, stripped(plain)
            ),
            f"what is sent ({len(source):,} bytes)": compile_ms(python, source),
        }
        ticked = stages(python, Path(handle.name), "ticks", max(5, runs // 8), ticks)
        result["tick"] = ticked["tick"]
    return result


def table(results: list[tuple[str, dict[str, object]]]) -> list[str]:
    lines = [
        "| python | bare `-c pass` | `-S` | `-I` | cold probe | beyond bare | target "
        "| in-process load + first sample | persistent tick |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for version, r in results:
        beyond = float(r["beyond"])  # type: ignore[arg-type]
        inproc: dict[str, float] = r["inprocess"]  # type: ignore[assignment]
        inproc_ms = inproc["module body (its imports)"] + inproc["first sample"]
        verdict = "met" if beyond <= TARGET_MS else "**missed**"
        lines.append(
            f"| {version} | {r['bare']:.1f} ms | {r['bare -S']:.1f} ms | {r['bare -I']:.1f} ms "
            f"| {r['cold']:.1f} ms | {beyond:.1f} ms | <= {TARGET_MS:.0f} ms: {verdict} "
            f"| {inproc_ms:.1f} ms | {r['tick']:.2f} ms |"
        )
    return lines


def profile_table(
    results: list[tuple[str, dict[str, object]]], part: str = "profile", what: str = "stage"
) -> list[str]:
    names = [v for v, _ in results]
    lines = [f"| {what} (CPU ms, median) | " + " | ".join(names) + " |"]
    lines.append("|---" * (len(names) + 1) + "|")
    keys: list[str] = list(results[0][1].get(part, {}))  # type: ignore[attr-defined]
    for key in keys:
        cells = [f"{r[part][key]:.1f}" for _, r in results]  # type: ignore[index]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def read_results(path: Path) -> list[tuple[str, dict[str, object]]]:
    """The per-interpreter results an earlier run printed (``<version> <json>`` lines)."""
    found = []
    for line in path.read_text().splitlines():
        version, _, rest = line.partition(" ")
        if rest.startswith("{"):
            found.append((version, json.loads(rest)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--ticks", type=int, default=50)
    parser.add_argument("--tree", type=Path, default=REPO, help="checkout whose probe to run")
    parser.add_argument("--versions", default=",".join(VERSIONS))
    parser.add_argument("--before", type=Path, help="an earlier run's output, shown beside")
    parser.add_argument("--before-label", default="before", help="what that run measured")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    results = []
    for version, python in interpreters(tuple(args.versions.split(","))):
        results.append((version, measure(python, args.tree.resolve(), args.runs, args.ticks)))
        print(version, json.dumps(results[-1][1]), flush=True)
    sent = int(results[0][1]["sent_bytes"])  # type: ignore[call-overload]
    load = os.getloadavg()[0]
    body = [
        f"CPU (user + system, the child and what it reaped) of one probe on its node, median of "
        f"{args.runs} runs each (`benchmarks/bench_probe_cost.py`). Measured "
        f"{time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores shared "
        f"with other work (load {load:.1f}), no GPU (no NVML, no `nvidia-smi`), root (the kernel "
        f"log is readable); the control host sends {sent:,} bytes of prelude.",
        "",
        f"Rerun: `python benchmarks/bench_probe_cost.py --runs {args.runs} --ticks {args.ticks}"
        " --write-docs` (`--tree PATH` measures another checkout)",
        "",
        *table(results),
        "",
        "How to read it: *cold probe* is `check`'s node-side cost, exactly as the control host "
        "runs it (`python -c <BOOTSTRAP>`, the prelude and one request on stdin, EOF); *beyond "
        "bare* is the median of (cold probe - bare start) over pairs run in turns, what the "
        "probe adds to the interpreter's own start, which no probe can avoid. *in-process* is "
        "the module's body and the first `Probe().sample()` in a fresh process (the local node "
        "in `check`). *persistent tick* is what each further request costs a live probe "
        f"(`watch`): `Probe.answer()` of a request line (parse, sample, encode), the mean of "
        f"{args.ticks} in one process after a first one, the median over processes.",
        "",
        "Where a cold probe's time goes (each stage in a fresh process, in this order, so each "
        "pays the imports it is the first to need):",
        "",
        *profile_table(results),
        "",
        "Compiling the source (what the bootstrap does first), warm, in one process:",
        "",
        *profile_table(results, "compile", "compile of"),
    ]
    if args.before is not None:
        before = read_results(args.before)
        body += [
            "",
            f"Before ({args.before_label}; `--tree` on a checkout of it, same command):",
            "",
            *table(before),
            "",
            *profile_table(before),
        ]
    print("\n".join([DOC_SECTION, "", *body]))
    if args.write_docs:
        write_section(DOC_SECTION, body)


if __name__ == "__main__":
    main()
