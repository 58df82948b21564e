"""Simulated GPU nodes behind the sshd rig: per-node ``python:`` wrappers that run the simulator.

``sim_pythons(rig, names)`` writes, under the rig's directory, one small ``/bin/sh`` script per
node that execs ``<interpreter> -m ugro_health.sim.node --node NAME --nodes N --story steady
"$@"``; configured as the node's ``python:``, it receives the probe's bootstrap (``-c '...'``)
and answers the real probe protocol with the node's simulated sample
(``ugro_health/sim/node.py``). Used by ``benchmarks/_cluster.py`` (``node_side="sim"``) and the
integration tests.

The scripts run as the rig's login user (``ugrotest`` as root), who may not be able to read
this worktree or run its virtualenv's interpreter (a pyenv build under ``/root``): the package
is copied into the rig's directory (byte-compiled there, since that user cannot write it) and
found through ``PYTHONPATH``; the interpreter is ``sys.executable`` where that user can run it,
else ``REMOTE_PYTHON`` (the simulator needs only the standard library). One copy per rig and
one short script per node keep a thousand nodes cheap to set up.
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sshd_rig import REMOTE_PYTHON, SshdRig

import ugro_health
from ugro_health.sim.node import node_names

LIB = "sim-lib"  # under the rig's root: the copy of the package
SCRIPTS = "sim-python"  # under the rig's root, one directory per call: a wrapper per node


def sim_pythons(
    rig: SshdRig,
    names: Sequence[str],
    *,
    story: str = "steady",
    start: float | None = None,
) -> dict[str, str]:
    """Node name -> the path of its wrapper (a valid ``python:`` value), for all ``names``."""
    lib = _package_copy(rig)
    # A directory per call: calls with another story must not overwrite earlier wrappers.
    scripts = Path(tempfile.mkdtemp(prefix=SCRIPTS + "-", dir=rig.root))
    scripts.chmod(0o755)
    cluster = ["--nodes", str(len(names))]
    if list(names) != node_names(len(names)):
        cluster = ["--names", ",".join(names)]
    options = [*cluster, "--story", story]
    if start is not None:
        options += ["--start", repr(start)]
    head = (
        "#!/bin/sh\n"
        f"PYTHONPATH={shlex.quote(str(lib))}\n"
        "export PYTHONPATH\n"
        f"exec {shlex.quote(_interpreter(rig))} -m ugro_health.sim.node"
    )
    tail = " ".join(shlex.quote(option) for option in options) + ' "$@"\n'
    paths = {}
    for name in names:
        path = scripts / name
        path.write_text(f"{head} --node {shlex.quote(name)} {tail}")
        path.chmod(0o755)
        paths[name] = str(path)
    return paths


def _package_copy(rig: SshdRig) -> Path:
    """The package, copied once into the rig's directory and byte-compiled there."""
    lib = rig.root / LIB
    package = lib / "ugro_health"
    if not package.exists():
        source = Path(ugro_health.__file__).parent
        shutil.copytree(source, package, ignore=shutil.ignore_patterns("__pycache__"))
        for directory in (lib, *(p for p in lib.rglob("*") if p.is_dir())):
            directory.chmod(0o755)
        # Only what the simulator imports; the login user could not write the caches.
        wanted = [package / "__init__.py", package / "probe.py", package / "sim"]
        subprocess.run(
            [_interpreter(rig), "-m", "compileall", "-q", *map(str, wanted)],
            check=True,
            capture_output=True,
        )
    return lib


def _interpreter(rig: SshdRig) -> str:
    """``sys.executable`` if the rig's login user can run it, else ``REMOTE_PYTHON``."""
    if rig.user == getpass.getuser():
        return sys.executable
    real = Path(os.path.realpath(sys.executable))
    # Others need x on every directory above it and r+x on the file itself.
    if all(p.stat().st_mode & 0o001 for p in real.parents) and real.stat().st_mode & 0o005 == 5:
        return str(real)
    return REMOTE_PYTHON
