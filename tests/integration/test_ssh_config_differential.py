"""ssh_config resolution against the real OpenSSH client: generated configurations, ``ssh -G``.

A seeded generator writes ssh_config families (patterns, negation, Include relative, absolute,
``~`` and glob, Match all/host/originalhost/user/localuser/exec/final/canonical, tokens, comments,
quoting, ``Key=value``, CRLF, ProxyJump/ProxyCommand chains, bad lines) into a temporary HOME; for
every alias each option ugro-health uses must equal what ``ssh -G -F file alias`` prints, and a
file ssh refuses must be refused. ``Match exec`` commands are harmless (true, false, test).

A second run compares without ``-F``: ssh then reads ``~/.ssh/config`` (from the passwd home,
not $HOME) and this machine's real ``/etc/ssh/ssh_config`` after it. The generated home is
bind-mounted over the passwd home in a private mount namespace (``unshare -m``), so nothing
outside the test's temporary directory is touched.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from ugro_health.transport.ssh_config import SshConfigError
from ugro_health.transport.ssh_config_eval import HostConfig, Local, SshConfig

SEED = int(os.environ.get("UGRO_SSH_CONFIG_SEED", "20261203"))
CASES = int(os.environ.get("UGRO_SSH_CONFIG_CASES", "250"))
ALIASES = ["gpu1", "gpu2", "Gpu3", "web-a", "db.x", "10.0.0.5", "bastion"]
SSH_DEFAULT_IDS = tuple(
    f"~/.ssh/id_{k}" for k in ("rsa", "ecdsa", "ecdsa_sk", "ed25519", "ed25519_sk", "xmss", "dsa")
)
STRICT = {"true": "yes", "false": "no", "ask": "ask", "accept-new": "accept-new"}

HOST_PATTERNS = [
    "gpu1", "gpu2", "Gpu3", "gpu*", "gpu?", "!gpu2", "*", "web-*", "db.x", "gpu[12]",
    "10.0.0.*", "!10.0.0.5", "GPU1", "bastion", "web-a,db.x", "*.x",
]  # fmt: skip
MATCHES = [
    "all", "host gpu*", "host GPU1,db.*", "!host gpu2", "originalhost Gpu3", "user bob",
    "user root,!admin", "localuser root", "exec true", "exec false", 'exec "test %h = gpu1"',
    "host node-* exec true", "final", "final host node-*", "canonical", "!final user bob",
    "final all", "originalhost gpu* # trailing comment", "host=gpu1", 'exec "test %n = Gpu3"',
    "localuser nobody", "host gpu1 !user bob", 'exec "test %r = bob" host *',
]  # fmt: skip
VALUES = {
    "HostName": ["node-%h", "Node-%h.Example", "10.1.1.1", "%h.lan", "%%h", "BIG", "db.x"],
    "User": ["bob", "alice", "root", '"carol"', "admin"],
    "Port": ["2222", "22", "ssh", "6022"],
    "IdentityFile": [
        "~/.ssh/k_%n",
        "~/keys/%h_%p_%r",
        "/keys/%u-%L-%l",
        "/k/%C",
        "/k/%i/%k",
        "%d/id",
        "a/~/b",
        '"/with space/%h"',
        "~/.ssh/id_ed25519",
        "/k/%%",
    ],
    "IdentitiesOnly": ["yes", "no", "true"],
    "ProxyJump": ["jump1", "bob@jump2:2200", "jump1,jump2", "none", "ssh://eve@jump3"],
    "ProxyCommand": ["nc %h %p", "none", "ssh -W %h:%p jump1", "socat - TCP:%h:%p # c"],
    "UserKnownHostsFile": [
        "~/kh/%h_%p",
        "/kh/a /kh/b",
        "none",
        "%d/kh/%n",
        "~/.ssh/known_hosts",
        "/kh/%C %k",
    ],
    "GlobalKnownHostsFile": ["/etc/kh", "/g/a /g/b", "none"],
    "CheckHostIP": ["yes", "no"],
    "HostKeyAlias": ["Alias-%h", "KeyAlias", "gpu-key"],
    "HashKnownHosts": ["yes", "no"],
    "StrictHostKeyChecking": ["yes", "no", "ask", "accept-new", "off", "true"],
    "ConnectTimeout": ["5", "1m", "none", "1m30s"],
    "ServerAliveInterval": ["15", "0", "2m"],
    "HostKeyAlgorithms": ["ssh-ed25519,ecdsa-sha2-nistp256", "rsa-sha2-512"],
}
BAD_LINES = [
    "Port notaport", "NoSuchOption yes", "Match frobnicate x", 'User "unclosed', "Host",
    "Match all host x", "IdentityFile a b", "StrictHostKeyChecking maybe", "Include",
]  # fmt: skip


def _line(rng: random.Random, key: str, value: str) -> str:
    form = rng.choice(["{k} {v}", "{k}={v}", "{k} = {v}", "\t{lk} {v}", "  {uk}  {v}"])
    text = form.format(k=key, v=value, lk=key.lower(), uk=key.upper())
    if rng.random() < 0.15 and key not in ("ProxyCommand", "ProxyJump"):
        text += "  # trailing comment"
    return text


def _options(rng: random.Random, count: int) -> list[str]:
    keys = rng.sample(sorted(VALUES), count)
    return [_line(rng, key, rng.choice(VALUES[key])) for key in keys]


def _block(rng: random.Random) -> list[str]:
    if rng.random() < 0.35:
        head = "Match " + rng.choice(MATCHES)
    else:
        head = "Host " + " ".join(rng.sample(HOST_PATTERNS, rng.randint(1, 3)))
        if rng.random() < 0.1:
            head += " # a comment, not patterns"
    return [head, *_options(rng, rng.randint(1, 4))]


def _write(path: Path, lines: list[str], crlf: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\r\n" if crlf else "\n").join(lines) + "\n", encoding="utf-8")


def _family(rng: random.Random, home: Path) -> Path:
    """One configuration: ~/.ssh/config, maybe with included files."""
    ssh_dir = home / ".ssh"
    for old in (ssh_dir / "inc").glob("*"):
        old.unlink()
    lines: list[str] = ["# generated"] + (_options(rng, 1) if rng.random() < 0.3 else [])
    if rng.random() < 0.1:
        lines += ["IgnoreUnknown NoSuch*", "NoSuchOption yes"]
    for _ in range(rng.randint(1, 5)):
        lines += _block(rng)
        if rng.random() < 0.25:
            name = f"part{rng.randint(0, 2)}.conf"
            _write(ssh_dir / "inc" / name, _block(rng) + _block(rng), rng.random() < 0.3)
            lines.append(
                "Include "
                + rng.choice(
                    [f"inc/{name}", "inc/*.conf", f"{ssh_dir}/inc/{name}", f"~/.ssh/inc/{name}"]
                )
            )
    if rng.random() < 0.08:
        lines.insert(rng.randrange(1, len(lines) + 1), rng.choice(BAD_LINES))
    config = ssh_dir / "config"
    _write(config, lines, rng.random() < 0.2)
    return config


SYSTEM_CONFIG = "/etc/ssh/ssh_config"
SYSTEM_CASES = int(os.environ.get("UGRO_SSH_SYSTEM_CONFIG_CASES", "40"))
# ssh -G with no -F, the generated home mounted over the passwd home ($2) for this command only
_UNSHARED = 'mount --bind "$1" "$2" && exec ssh -G "$3"'


def _ssh_g(
    config: Path, alias: str, home: Path, system: bool = False
) -> dict[str, list[str]] | None:
    env = {**os.environ, "HOME": str(home)}
    argv = ["ssh", "-G", "-F", str(config), alias]
    if system:
        pw_dir = pwd.getpwuid(os.getuid()).pw_dir
        argv = ["unshare", "-m", "sh", "-c", _UNSHARED, "sh", str(home), pw_dir, alias]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        return None
    seen: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        seen.setdefault(key, []).append(value)
    return seen


def _ours(host: HostConfig) -> dict[str, list[str]]:
    return {
        "user": [host.user],
        "hostname": [host.hostname],
        "port": [str(host.port)],
        "identityfile": list(host.identity_files or SSH_DEFAULT_IDS),
        "identitiesonly": ["yes" if host.identities_only else "no"],
        "proxyjump": [host.proxy_jump] if host.proxy_jump else [],
        "proxycommand": [host.proxy_command] if host.proxy_command else [],
        "userknownhostsfile": [" ".join(host.user_known_hosts) or "none"],
        "globalknownhostsfile": [" ".join(host.global_known_hosts) or "none"],
        "checkhostip": ["yes" if host.check_host_ip else "no"],
        "hostkeyalias": [host.host_key_alias] if host.host_key_alias else [],
        "hashknownhosts": ["yes" if host.hash_known_hosts else "no"],
        "stricthostkeychecking": [host.strict_host_key_checking],
        "connecttimeout": ["none" if host.connect_timeout is None else str(host.connect_timeout)],
        "serveraliveinterval": [str(host.server_alive_interval)],
        "hostkeyalgorithms": [host.host_key_algorithms or DEFAULT_ALGORITHMS[0]],
    }


def _theirs(seen: dict[str, list[str]], ours: HostConfig) -> dict[str, list[str]]:
    picked = {key: seen.get(key, []) for key in _ours(ours)}
    picked["stricthostkeychecking"] = [STRICT[v] for v in picked["stricthostkeychecking"]]
    return picked


DEFAULT_ALGORITHMS: list[str] = []  # what ssh -G prints without HostKeyAlgorithms


@pytest.fixture(scope="module")
def ssh_client() -> str:
    path = shutil.which("ssh")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("the OpenSSH client is missing (CI is set: this test must run)")
        pytest.skip("the OpenSSH client is not installed")
    seen = _ssh_g(Path("/dev/null"), "x", Path.home())
    assert seen is not None
    DEFAULT_ALGORITHMS[:] = seen["hostkeyalgorithms"]
    return path


@pytest.mark.slow
def test_resolution_matches_ssh_minus_g(ssh_client: str, tmp_path: Path) -> None:
    mismatches, compared = _compare(tmp_path, CASES, system=False)
    text = "\n".join(mismatches[:20])
    assert not mismatches, f"{len(mismatches)} differences from ssh -G, e.g.:\n{text}"
    assert compared > CASES  # most families resolve: the comparison is not vacuous


@pytest.fixture(scope="module")
def private_home(ssh_client: str) -> None:
    """``unshare -m`` with bind mounts works here (root, or CAP_SYS_ADMIN)."""
    probe = ["unshare", "-m", "sh", "-c", "mount --bind / /mnt"]
    try:
        ok = subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0
    except OSError:
        ok = False
    if not ok:
        if os.environ.get("CI"):
            pytest.fail("unshare -m with a bind mount is refused (CI is set: this must run)")
        pytest.skip("no private mount namespace here (unshare -m needs root)")


@pytest.mark.slow
def test_resolution_with_the_system_file_matches_ssh_minus_g(
    private_home: None, tmp_path: Path
) -> None:
    mismatches, compared = _compare(tmp_path, SYSTEM_CASES, system=True)
    text = "\n".join(mismatches[:20])
    assert not mismatches, f"{len(mismatches)} differences from ssh -G, e.g.:\n{text}"
    assert compared > SYSTEM_CASES


def _compare(tmp_path: Path, cases: int, system: bool) -> tuple[list[str], int]:
    pw = pwd.getpwuid(os.getuid())
    local = Local(pw.pw_name, pw.pw_dir, os.getuid(), socket.gethostname())  # as ssh takes it
    rng = random.Random(SEED + system)
    mismatches: list[str] = []
    compared = 0
    for case in range(cases):
        config = _family(rng, tmp_path)
        os.environ["HOME"], old_home = str(tmp_path), os.environ.get("HOME", "")
        try:
            parsed = SshConfig(str(config), local=local, system=SYSTEM_CONFIG if system else None)
            for alias in rng.sample(ALIASES, 3):
                seen = _ssh_g(config, alias, tmp_path, system)
                try:
                    ours = parsed.lookup(alias)
                except SshConfigError as exc:
                    if seen is not None:
                        mismatches.append(f"case {case} {alias}: we refused ({exc}), ssh did not")
                    continue
                if seen is None:
                    mismatches.append(f"case {case} {alias}: ssh -G refused, we did not")
                    continue
                compared += 1
                mine, theirs = _ours(ours), _theirs(seen, ours)
                for key in mine:
                    if mine[key] != theirs[key]:
                        mismatches.append(
                            f"case {case} {alias} {key}: ours {mine[key]} ssh {theirs[key]}"
                        )
        finally:
            os.environ["HOME"] = old_home
        if len(mismatches) > 20:
            break
    return mismatches, compared
