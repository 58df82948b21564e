"""Host-key decisions against OpenSSH's own client, scenario by scenario, on the real sshd rig.

A seeded generator writes known_hosts files in the four places ssh reads (two
UserKnownHostsFile, two GlobalKnownHostsFile) with plain, hashed, wildcard, negated, port-less,
alias and unrelated names, right and wrong keys of each type, ``@revoked`` and
``@cert-authority`` lines, and an ssh_config with CheckHostIP, HostKeyAlias, HashKnownHosts and
HostKeyAlgorithms. ``ssh -o BatchMode=yes -o StrictHostKeyChecking=yes|accept-new`` and
ugro-health's connector each decide (on copies of the same files); the decisions must be equal,
and after an enrolment the file we wrote must make ssh accept the host too. The only mismatch
allowed is one the README lists as a known difference in the safe direction.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from sshd_rig import SshdRig, _keygen, _public_key

from ugro_health.config import NodeConfig
from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError
from ugro_health.transport.ssh_connect import Attempt, Connector, classify
from ugro_health.transport.ssh_known_hosts import hash_name

pytestmark = [pytest.mark.ssh, pytest.mark.slow]

# 60 scenarios take ~20 s here; to explore, UGRO_HOSTKEY_SEED / _SCENARIOS pick others, and
# UGRO_HOSTKEY_ONLY=N runs scenario N alone with `ssh -v` (its output in the failure).
SCENARIOS = int(os.environ.get("UGRO_HOSTKEY_SCENARIOS", "60"))
SEED = int(os.environ.get("UGRO_HOSTKEY_SEED", "1000"))
FILES = ("user1", "user2", "global1", "global2")
ALGORITHM_SETTINGS = (
    "ssh-ed25519",
    "^rsa-sha2-512",
    "-ssh-ed25519",
    "+ssh-rsa",
    "ecdsa-sha2-nistp256,rsa-sha2-256",
    "rsa-sha2-*,ssh-ed25519",
)


@dataclass
class Keys:
    """The rig's host keys by type: the ones its servers hold, and others of each type."""

    right: dict[str, str]  # type -> "type base64"
    wrong: dict[str, str]


@dataclass
class Servers:
    keys: Keys
    ports: dict[str, int]  # "multi" (ed25519, ecdsa, rsa) and "rsa" (rsa only)


@pytest.fixture(scope="module")
def servers(sshd_rig: SshdRig) -> Servers:
    root = sshd_rig.root
    made = {kind: _keygen(root / f"hk_{kind}", f"hk-{kind}", kind) for kind in ("ecdsa", "rsa")}
    wrong = {
        kind: _keygen(root / f"hk_wrong_{kind}", f"hk-wrong-{kind}", kind)
        for kind in ("ecdsa", "rsa")
    }
    right = {"ed25519": sshd_rig.host_key, **made}
    wrong["ed25519"] = sshd_rig.other_host_key
    multi = sshd_rig.start_node(
        "hk-multi", record=False, extra_host_keys=(made["ecdsa"], made["rsa"])
    )
    rsa = sshd_rig.start_node("hk-rsa", host_key=made["rsa"], record=False)
    keys = Keys(
        right={k: _public_key(p) for k, p in right.items()},
        wrong={k: _public_key(p) for k, p in wrong.items()},
    )
    return Servers(keys, {"multi": multi.port, "rsa": rsa.port})


@dataclass
class Scenario:
    index: int
    server: str
    mode: str  # StrictHostKeyChecking: yes | accept-new
    lines: list[tuple[str, str]]  # (file, line)
    options: dict[str, str]

    def describe(self) -> str:
        lines = "\n".join(f"  {f}: {line[:90]}" for f, line in self.lines)
        return f"scenario {self.index} ({self.server}, {self.mode}, {self.options}):\n{lines}"


MAPPED = "::ffff:127.0.0.1"  # the rig over IPv6: not loopback to ssh, so CheckHostIP applies


def _names(rnd: random.Random, port: int, alias: str | None, mapped: bool) -> str:
    if mapped:
        exact = f"[{MAPPED}]:{port}"
        return rnd.choice(
            [exact, exact, hash_name(exact, rnd.randbytes(20)), MAPPED, "[::ffff:127.0.0.?]:*"]
            + ([alias, alias] if alias else [])
        )
    exact = f"[127.0.0.1]:{port}"
    choices = [
        exact,
        hash_name(exact, rnd.randbytes(20)),
        "[127.0.0.?]:*",
        "*",
        f"[127.0.0.1]:*,!{exact}",  # the negation names this host: the line does not apply
        f"{exact},!10.0.0.*",  # a negation that names another host: the line applies
        "127.0.0.1",  # no port: ssh's retry without the port may use it
        f"[10.9.9.9]:{port}",
        "[127.0.0.1]:1",
    ]
    if alias:
        choices += [alias, alias, hash_name(alias, rnd.randbytes(20))]
    return rnd.choice(choices)


def generate(index: int, servers: Servers) -> Scenario:
    rnd = random.Random(SEED + index)
    keys = servers.keys
    options: dict[str, str] = {}
    server = "rsa" if rnd.random() < 0.25 else "multi"
    if rnd.random() < 0.3:
        options["HostName"] = MAPPED
    if rnd.random() < 0.3:
        options["CheckHostIP"] = "yes"
    if rnd.random() < 0.25:
        options["HostKeyAlias"] = f"gpuhost{index}"
    if rnd.random() < 0.3:
        options["HashKnownHosts"] = "yes"
    if rnd.random() < 0.4:
        options["HostKeyAlgorithms"] = rnd.choice(ALGORITHM_SETTINGS)
    lines: list[tuple[str, str]] = []
    for _ in range(rnd.choice((0, 1, 1, 2, 2, 3))):
        kind = rnd.choice(("ed25519", "ecdsa", "rsa"))
        key = (keys.right if rnd.random() < 0.55 else keys.wrong)[kind]
        marker = rnd.choices(("", "@revoked ", "@cert-authority "), (8, 1, 1))[0]
        name = _names(
            rnd, servers.ports[server], options.get("HostKeyAlias"), "HostName" in options
        )
        lines.append((rnd.choice(FILES), f"{marker}{name} {key}"))
    if rnd.random() < 0.15:
        lines.append((rnd.choice(FILES), "# a comment\n   \nnot a key line"))
    return Scenario(index, server, rnd.choice(("yes", "accept-new")), lines, options)


def write_files(directory: Path, scenario: Scenario, port: int, rig: SshdRig) -> Path:
    directory.mkdir(parents=True)
    texts: dict[str, str] = {name: "" for name in FILES}
    for file, line in scenario.lines:
        texts[file] += line + "\n"
    for name, text in texts.items():
        if text:
            (directory / name).write_text(text)
    config = directory / "ssh_config"
    opts = "".join(
        f"    {k} {v}\n" for k, v in {"HostName": "127.0.0.1", **scenario.options}.items()
    )
    user = " ".join(str(directory / f) for f in FILES[:2])
    glob = " ".join(str(directory / f) for f in FILES[2:])
    config.write_text(
        f"Host hk\n    Port {port}\n    User {rig.user}\n"
        f"    IdentityFile {rig.key}\n    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {user}\n    GlobalKnownHostsFile {glob}\n{opts}"
    )
    return config


def ssh_decides(config: Path, mode: str) -> tuple[str, str]:
    verbose = ["-v"] if os.environ.get("UGRO_HOSTKEY_ONLY") else []
    options = [f"StrictHostKeyChecking={mode}", "BatchMode=yes", "UpdateHostKeys=no"]
    run = subprocess.run(
        ["ssh", "-F", str(config), *verbose, *(f"-o{o}" for o in options), "hk", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    err = run.stderr
    if run.returncode == 0:
        return "accept", err
    # ssh may warn on the way (a revoked port-less entry, then "not known"): its last
    # "strict checking" line is the decision
    final = [line for line in err.splitlines() if "requested strict checking" in line]
    last = final[-1] if final else ""
    if "was revoked" in last:
        return "revoked", err
    if "has changed" in last or last.startswith("Exiting"):
        return "changed", err
    if "host key is known" in last:
        return "unknown", err
    return "refused", err


def we_decide(rig: SshdRig, config: Path, mode: str) -> tuple[str, str]:
    settings = rig.settings(known_hosts=None, ssh_config=str(config), connect_timeout=20.0)
    accept_new = mode == "accept-new"
    connector = Connector(
        settings, accept_new=accept_new, ssh_config_path=str(config), known_hosts_files=None
    )
    attempt = Attempt(time.monotonic() + 60)
    try:
        connector.open(attempt, connector.resolve(NodeConfig(name="hk", transport="ssh")))
    except TransportError as exc:
        error = exc
    except Exception as exc:
        error = classify(exc, attempt)
    else:
        return "accept", ""
    finally:
        attempt.close()
    if error.kind is ErrorKind.HOST_KEY_UNKNOWN:
        return "unknown", error.message
    if error.kind is ErrorKind.HOST_KEY_CHANGED:
        return ("revoked" if "@revoked" in error.message else "changed"), error.message
    return "refused", error.message


def known_difference(ours: tuple[str, str], theirs: tuple[str, str]) -> bool:
    """The README's known differences that this rig can reach, each in the safe direction (we
    refuse, ssh accepts): a key @revoked under the host's IP address with CheckHostIP. (Host
    certificates, the other one, need a server with a certificate: the rig has none.)"""
    return theirs[0] == "accept" and ours[0] == "revoked" and "(CheckHostIP)" in ours[1]


def test_host_key_decisions_match_openssh(
    sshd_rig: SshdRig, servers: Servers, tmp_path: Path
) -> None:
    failures: list[str] = []
    seen: dict[str, int] = {}
    for index in (
        [int(os.environ["UGRO_HOSTKEY_ONLY"])]
        if os.environ.get("UGRO_HOSTKEY_ONLY")
        else range(SCENARIOS)
    ):
        scenario = generate(index, servers)
        port = servers.ports[scenario.server]
        theirs_config = write_files(tmp_path / f"s{index}" / "ssh", scenario, port, sshd_rig)
        ours_config = write_files(tmp_path / f"s{index}" / "ours", scenario, port, sshd_rig)
        before = {f: _read(ours_config.parent / f) for f in FILES}
        theirs = ssh_decides(theirs_config, scenario.mode)
        ours = we_decide(sshd_rig, ours_config, scenario.mode)
        seen[theirs[0]] = seen.get(theirs[0], 0) + 1
        if ours[0] != theirs[0] and not known_difference(ours, theirs):
            failures.append(
                f"{scenario.describe()}\n  ssh: {theirs[0]} ({theirs[1].strip()[-300:]!r})"
                f"\n  ugro-health: {ours[0]} ({ours[1]})"
            )
            continue
        after = {f: _read(ours_config.parent / f) for f in FILES}
        if ours[0] != "accept":
            if after != before:
                failures.append(f"{scenario.describe()}\n  refused, yet a file was written")
        elif scenario.mode == "accept-new" and after != before:
            # what we enrolled must make ssh itself accept the host from now on
            again = ssh_decides(ours_config, "yes")
            if again[0] != "accept":
                failures.append(
                    f"{scenario.describe()}\n  after our enrolment ssh says {again[0]}:"
                    f" {again[1].strip()[-300:]!r}\n  files: {after}"
                )
    assert not failures, "\n\n".join(failures)
    # the generator must reach every kind of decision, or it tests less than it claims
    if not os.environ.get("UGRO_HOSTKEY_ONLY"):
        assert {"accept", "unknown", "changed", "revoked"} <= set(seen), seen


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None
