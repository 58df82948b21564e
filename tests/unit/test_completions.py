"""Shell completion: the committed scripts are current, and TAB really offers node names.

Through Typer's protocol (``_UGRO_HEALTH_COMPLETE=complete_<shell>``) and through the committed
scripts in a real bash (and zsh and fish, where installed).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from cli_helpers import cli_env, run_cli, tab_completions

COMPLETIONS = Path(__file__).resolve().parents[2] / "completions"
CLUSTER = "nodes:\n  - name: here\n    host: localhost\n  - gpu[01-03]\n  - cpu1\n"
GPUS = ["gpu01", "gpu02", "gpu03"]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate", COMPLETIONS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_committed_scripts_match_the_app(shell: str):
    generate = _generator()
    committed = (COMPLETIONS / generate.FILES[shell]).read_text(encoding="utf-8")
    assert committed == generate.render(shell), "run: python completions/generate.py"


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    return tmp_path


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ugro-health check --nodes g", GPUS),
        ("ugro-health watch -n c", ["cpu1"]),
        ("ugro-health history ", ["here", *GPUS, "cpu1"]),
        ("ugro-health jobs start llama --nodes gpu01,g", ["gpu01,gpu02", "gpu01,gpu03"]),
        ("ugro-health jobs start llama --nodes here,cpu1,", ["here,cpu1," + g for g in GPUS]),
    ],
)
def test_node_names_are_offered(cluster: Path, line: str, expected: list[str]):
    assert tab_completions(cluster, line) == expected


def test_metrics_and_active_job_names_are_offered(cluster: Path):
    assert tab_completions(cluster, "ugro-health history --metric gpu_") == [
        "gpu_temp",
        "gpu_util",
        "gpu_mem",
    ]
    assert tab_completions(cluster, "ugro-health history -m s") == ["score"]
    for name in ("llama", "lora", "bert"):
        assert run_cli("jobs", "start", name, "--nodes", "here", cwd=cluster).returncode == 0
    run_cli("jobs", "finish", "bert", cwd=cluster)
    assert tab_completions(cluster, "ugro-health jobs finish l") == ["llama", "lora"]
    assert tab_completions(cluster, "ugro-health jobs finish ") == ["llama", "lora"]


def test_breaker_reset_completes_node_names(cluster: Path):
    assert tab_completions(cluster, "ugro-health breaker reset gpu0") == GPUS


def test_commands_and_options_are_offered(cluster: Path):
    assert tab_completions(cluster, "ugro-health c") == ["check", "config"]
    assert tab_completions(cluster, "ugro-health config ") == ["validate", "show", "init"]
    assert tab_completions(cluster, "ugro-health check --n") == [
        "--nodes",
        "--nagios",
        "--no-record",
    ]


def test_demo_and_its_options_are_offered(cluster: Path):
    assert tab_completions(cluster, "ugro-health d") == ["demo"]
    assert tab_completions(cluster, "ugro-health demo --") == [
        "--headless",
        "--speed",
        "--duration",
        "--keep-state",
        "--metrics-listen",
        "--help",
    ]


def test_the_config_the_command_line_would_load_is_used(tmp_path: Path):
    (tmp_path / "other.yaml").write_text("nodes: [alpha, beta]\n")
    by_env = tab_completions(
        tmp_path, "ugro-health history ", env={"UGRO_HEALTH_CONFIG": "other.yaml"}
    )
    by_option = tab_completions(tmp_path, "ugro-health --config other.yaml check --nodes ")
    assert by_env == by_option == ["alpha", "beta"]


@pytest.mark.parametrize("text", ["nodes: [\n", "nodes:\n  - name: a\n    prot: 2\n"])
def test_a_broken_config_offers_nothing_and_never_fails(tmp_path: Path, text: str):
    (tmp_path / "cluster.yaml").write_text(text)
    assert tab_completions(tmp_path, "ugro-health check --nodes ") == []


def test_zsh_and_fish_protocols_offer_node_names(cluster: Path):
    zsh = run_cli(
        cwd=cluster,
        env={
            "_UGRO_HEALTH_COMPLETE": "complete_zsh",
            "_TYPER_COMPLETE_ARGS": "ugro-health check --nodes gpu0",
        },
    )
    assert all(f'"{g}"' in zsh.stdout for g in GPUS) and '"cpu1"' not in zsh.stdout
    fish = run_cli(
        cwd=cluster,
        env={
            "_UGRO_HEALTH_COMPLETE": "complete_fish",
            "_TYPER_COMPLETE_FISH_ACTION": "get-args",
            "_TYPER_COMPLETE_ARGS": "ugro-health history gpu0",
        },
    )
    assert fish.stdout.split() == GPUS


# --- the committed scripts, in real shells --------------------------------------------------


@pytest.fixture
def shell_env(tmp_path: Path, cluster: Path) -> dict[str, str]:
    """An environment whose PATH has an ``ugro-health`` running this checkout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ugro-health"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ugro_health "$@"\n')
    wrapper.chmod(0o755)
    env = cli_env(cluster)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return env


def in_shell(argv: list[str], cwd: Path, env: dict[str, str]) -> list[str]:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_bash_script(cluster: Path, shell_env: dict[str, str]):
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    script = (
        f"source {COMPLETIONS / 'ugro-health.bash'}\n"
        "COMP_WORDS=(ugro-health check --nodes gpu01,g); COMP_CWORD=3\n"
        "_ugro_health_completion ugro-health\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    assert in_shell(["bash", "-c", script], cluster, shell_env) == ["gpu01,gpu02", "gpu01,gpu03"]


def test_zsh_script_sourced_and_autoloaded(cluster: Path, shell_env: dict[str, str]):
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed")
    stub = '_arguments() { print -r -- "$@" }; compdef() { print -r -- compdef "$@" }; '
    sourced = stub + (
        f"source {COMPLETIONS / '_ugro-health'}; "
        "words=(ugro-health history gpu0); CURRENT=3; _ugro_health_completion"
    )
    out = " ".join(in_shell(["zsh", "-fc", sourced], cluster, shell_env))
    assert out.startswith("compdef _ugro_health_completion ugro-health")
    assert all(f'"{g}"' in out for g in GPUS) and "cpu1" not in out
    autoloaded = stub + (
        f"fpath=({COMPLETIONS} $fpath); autoload -U _ugro-health; "
        "words=(ugro-health check --nodes c); CURRENT=4; _ugro-health"
    )
    assert in_shell(["zsh", "-fc", autoloaded], cluster, shell_env) == ["*:", ':(("cpu1"))']


def test_fish_script(cluster: Path, shell_env: dict[str, str]):
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed")
    script = (
        f"source {COMPLETIONS / 'ugro-health.fish'}; complete -C 'ugro-health jobs start x -n gpu'"
    )
    assert in_shell(["fish", "-c", script], cluster, shell_env) == GPUS


def test_install_completion_works_in_a_fresh_home(tmp_path: Path, cluster: Path):
    """The README's first recipe: no ~/.local/share/bash-completion, no bash-completion
    package; ``--install-completion`` hooks the script into ~/.bashrc."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    home = tmp_path / "home"
    home.mkdir()
    env = cli_env(cluster, {"HOME": str(home), "SHELL": "/bin/bash"})
    bin_dir = tmp_path / "bin2"
    bin_dir.mkdir()
    wrapper = bin_dir / "ugro-health"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ugro_health "$@"\n')
    wrapper.chmod(0o755)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    installed = subprocess.run(
        ["ugro-health", "--install-completion", "bash"],
        cwd=cluster,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert installed.returncode == 0, installed.stderr
    script = (
        "source ~/.bashrc\n"
        "COMP_WORDS=(ugro-health history --metric gpu_t); COMP_CWORD=3\n"
        "_ugro_health_completion ugro-health\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    assert in_shell(["bash", "-c", script], cluster, env) == ["gpu_temp"]
