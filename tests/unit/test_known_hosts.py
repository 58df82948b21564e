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
from ugro_health.transport import ssh_hostkeys
from ugro_health.transport.base import TransportError
from ugro_health.transport.ssh_hostkeys import KnownHosts
from ugro_health.transport.ssh_known_hosts import Query

NAME = "[10.0.0.7]:2222"
QUERY = Query(hostname="10.0.0.7", port=2222)


class _Pause:
    """Stands for ``ssh_hostkeys._naming``: in the thread named ``slow`` it stops after reading
    the entries until the test lets it go."""

    def __init__(self) -> None:
        self.looked_up = threading.Event()
        self.resume = threading.Event()
        self._real = ssh_hostkeys._naming

    def __call__(self, name: str, entries: list[Any]) -> Any:
        found = self._real(name, entries)
        if threading.current_thread().name == "slow":
            self.looked_up.set()
            assert self.resume.wait(5)
        return found


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> _Pause:
    pause = _Pause()
    monkeypatch.setattr(ssh_hostkeys, "_naming", pause)
    return pause


def in_slow_thread(keys: _Pause, call: Any) -> tuple[threading.Thread, list[Any]]:
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


def test_a_lookup_overtaken_by_an_enrolment_is_not_kept(tmp_path: Path, keys: _Pause) -> None:
    path = tmp_path / "known_hosts"
    path.touch()
    hosts = KnownHosts()
    files = (str(path),)
    real = paramiko.ECDSAKey.generate()

    slow, outcome = in_slow_thread(keys, lambda: hosts.lookup(NAME, files))
    hosts.verify(QUERY, real, files, enrol_path=str(path), what="node")  # enrols
    keys.resume.set()
    slow.join(5)
    assert outcome == [[]]  # it read the file before the enrolment

    assert [e.blob for e in hosts.lookup(NAME, files)] == [real.asbytes()]
    hosts.verify(QUERY, real, files, enrol_path=None, what="node")
    impostor = paramiko.ECDSAKey.generate()
    with pytest.raises(TransportError) as info:
        hosts.verify(QUERY, impostor, files, enrol_path=str(path), what="node")
    assert info.value.kind is ErrorKind.HOST_KEY_CHANGED
    assert len(path.read_text().splitlines()) == 1


def test_of_two_first_connections_offering_different_keys_the_second_is_refused(
    tmp_path: Path, keys: _Pause
) -> None:
    # Both find the host unknown; one enrols its key; the other, offering another key of the
    # same type, must not pass as "enrolled a moment ago".
    path = tmp_path / "known_hosts"
    path.touch()
    hosts = KnownHosts()
    files = (str(path),)
    real, impostor = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()

    slow, outcome = in_slow_thread(
        keys, lambda: hosts.verify(QUERY, impostor, files, enrol_path=str(path), what="node")
    )
    hosts.verify(QUERY, real, files, enrol_path=str(path), what="node")
    keys.resume.set()
    slow.join(5)

    (error,) = outcome
    assert isinstance(error, TransportError), error
    assert error.kind is ErrorKind.HOST_KEY_CHANGED
    assert "HOST KEY CHANGED for node" in error.message
    assert len(path.read_text().splitlines()) == 1
    assert real.get_base64() in path.read_text()


def test_the_same_key_enrolled_twice_at_once_is_written_once(tmp_path: Path, keys: _Pause) -> None:
    path = tmp_path / "known_hosts"
    path.touch()
    hosts = KnownHosts()
    files = (str(path),)
    real = paramiko.ECDSAKey.generate()

    slow, outcome = in_slow_thread(
        keys, lambda: hosts.verify(QUERY, real, files, enrol_path=str(path), what="node")
    )
    hosts.verify(QUERY, real, files, enrol_path=str(path), what="node")
    keys.resume.set()
    slow.join(5)

    assert outcome == [None]
    assert len(path.read_text().splitlines()) == 1


def test_an_enrolment_is_logged_with_its_name_type_and_fingerprint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "known_hosts"
    real = paramiko.ECDSAKey.generate()
    with caplog.at_level("WARNING", logger="ugro_health.transport.ssh_hostkeys"):
        KnownHosts().verify(QUERY, real, (str(path),), enrol_path=str(path), what="node")
    assert [r.getMessage() for r in caplog.records] == [
        f"enrolled host key for {NAME}: ecdsa-sha2-nistp256 {real.fingerprint} in {path}"
    ]
    assert path.read_text() == f"{NAME} ecdsa-sha2-nistp256 {real.get_base64()}\n"


def test_a_cert_authority_line_is_named_when_the_plain_key_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    ca, real = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    path.write_text(f"@cert-authority [10.0.0.*]:* ecdsa-sha2-nistp256 {ca.get_base64()}\n")
    hosts, files = KnownHosts(), (str(path),)
    with pytest.raises(TransportError) as info:
        hosts.verify(QUERY, real, files, enrol_path=None, what="node")
    assert info.value.kind is ErrorKind.HOST_KEY_UNKNOWN
    assert f"{path}:1 names a @cert-authority" in info.value.message
    # as ssh's accept-new does when no certificate verifies: the plain key is enrolled
    hosts.verify(QUERY, real, files, enrol_path=str(path), what="node")
    assert path.read_text().splitlines()[1] == f"{NAME} ecdsa-sha2-nistp256 {real.get_base64()}"
