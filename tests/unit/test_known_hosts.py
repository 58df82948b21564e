"""known_hosts under concurrent enrolment: the interleavings forced, one step at a time.

A lookup made in the thread named ``slow`` stops after reading the file until the test lets it
go, so another thread can enrol the host in between (as a node's parallel connections may).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import paramiko
import pytest

from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError
from ugro_health.transport.ssh_hostkeys import KnownHosts

NAME = "[10.0.0.7]:2222"


class _PausingHostKeys(paramiko.HostKeys):
    def __init__(self) -> None:
        super().__init__()
        self.looked_up = threading.Event()
        self.resume = threading.Event()

    def lookup(self, hostname: str) -> Any:
        found = super().lookup(hostname)
        if threading.current_thread().name == "slow":
            self.looked_up.set()
            assert self.resume.wait(5)
        return found


def paused_known_hosts(path: Path) -> tuple[KnownHosts, _PausingHostKeys]:
    path.touch()
    hosts = KnownHosts()
    keys = _PausingHostKeys()
    hosts._file(str(path)).keys = keys  # the file is empty: nothing parsed is replaced
    return hosts, keys


def in_slow_thread(keys: _PausingHostKeys, call: Any) -> tuple[threading.Thread, list[Any]]:
    """Start ``call`` in the ``slow`` thread; return once its lookup has read the file."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, name="slow")
    thread.start()
    assert keys.looked_up.wait(5)
    return thread, outcome


def test_a_lookup_overtaken_by_an_enrolment_is_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    hosts, keys = paused_known_hosts(path)
    files = (str(path),)
    real = paramiko.ECDSAKey.generate()

    slow, outcome = in_slow_thread(keys, lambda: hosts.known_keys(NAME, files))
    hosts.verify(NAME, real, files, enrol_path=str(path), what="node")  # enrols
    keys.resume.set()
    slow.join(5)
    assert outcome == [[]]  # it read the file before the enrolment

    assert [k.asbytes() for k in hosts.known_keys(NAME, files)] == [real.asbytes()]
    hosts.verify(NAME, real, files, enrol_path=None, what="node")
    impostor = paramiko.ECDSAKey.generate()
    with pytest.raises(TransportError) as info:
        hosts.verify(NAME, impostor, files, enrol_path=str(path), what="node")
    assert info.value.kind is ErrorKind.HOST_KEY_CHANGED
    assert len(path.read_text().splitlines()) == 1


def test_of_two_first_connections_offering_different_keys_the_second_is_refused(
    tmp_path: Path,
) -> None:
    # Both find the host unknown; one enrols its key; the other, offering another key of the
    # same type, must not pass as "enrolled a moment ago".
    path = tmp_path / "known_hosts"
    hosts, keys = paused_known_hosts(path)
    files = (str(path),)
    real, impostor = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()

    slow, outcome = in_slow_thread(
        keys, lambda: hosts.verify(NAME, impostor, files, enrol_path=str(path), what="node")
    )
    hosts.verify(NAME, real, files, enrol_path=str(path), what="node")
    keys.resume.set()
    slow.join(5)

    (error,) = outcome
    assert isinstance(error, TransportError), error
    assert error.kind is ErrorKind.HOST_KEY_CHANGED
    assert "HOST KEY CHANGED for node" in error.message
    assert len(path.read_text().splitlines()) == 1
    assert real.get_base64() in path.read_text()


def test_the_same_key_enrolled_twice_at_once_is_written_once(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    hosts, keys = paused_known_hosts(path)
    files = (str(path),)
    real = paramiko.ECDSAKey.generate()

    slow, outcome = in_slow_thread(
        keys, lambda: hosts.verify(NAME, real, files, enrol_path=str(path), what="node")
    )
    hosts.verify(NAME, real, files, enrol_path=str(path), what="node")
    keys.resume.set()
    slow.join(5)

    assert outcome == [None]
    assert len(path.read_text().splitlines()) == 1
