"""The public names of ``ugro_health``: listed, typed, documented with an example, and cheap
to import (nothing heavy until a name is used)."""

from __future__ import annotations

import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import ugro_health

ROOT = Path(__file__).resolve().parents[2]


def test_every_public_name_resolves_and_has_a_docstring_with_an_example():
    missing = []
    for name in ugro_health.__all__:
        value = getattr(ugro_health, name)
        if name == "__version__" or name == "MonitorEvent" or inspect.ismodule(value):
            continue
        doc = inspect.getdoc(value) or ""
        if "Example::" not in doc:
            missing.append(name)
    assert missing == []


def test_all_lists_exactly_the_lazy_exports():
    assert sorted(ugro_health.__all__) == sorted(["__version__", *ugro_health._EXPORTS])
    assert set(ugro_health._EXPORTS) <= set(dir(ugro_health))


def test_the_package_is_typed():
    assert (ROOT / "ugro_health" / "py.typed").exists()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["ugro_health"]


HEAVY = ("paramiko", "typer", "rich", "anyio", "click")


def loaded_after(code: str) -> list[str]:
    script = f"import sys\n{code}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    return eval(out.stdout.strip().splitlines()[-1])


def test_import_and_local_use_load_nothing_heavy(tmp_path: Path):
    assert loaded_after("import ugro_health") == []
    # A check and a blocking monitor of the local node need neither SSH, the CLI nor anyio.
    code = (
        "import ugro_health\n"
        "c = ugro_health.make_config(['localhost'])\n"
        f"ugro_health.check(c, record=False, state_dir={str(tmp_path)!r})\n"
        f"ugro_health.HealthMonitor(c, state_dir={str(tmp_path)!r}, interval_s=0.1).run(max_cycles=1)"
    )
    assert loaded_after(code) == []
    # The control: the async entry point does load anyio.
    assert loaded_after("import ugro_health.api.async_bridge") == ["anyio"]
