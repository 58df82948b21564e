"""Keys for the SSH transport: known_hosts (verify, enrol), the user's identities, ssh-agent.

Part of the SSH transport (imports paramiko; only the ``transport.ssh*`` modules import this one).
The policy is OpenSSH's ``StrictHostKeyChecking yes``, or ``accept-new`` when enrolment is asked
for: a changed or revoked key is refused always, an unknown one unless enrolment is on.
Files are parsed once per ``KnownHosts`` and cached; enrolment appends under a lock and updates
the cache, so concurrent probes of many nodes see one consistent view.
"""

from __future__ import annotations

import binascii
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import paramiko

from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError

log = logging.getLogger(__name__)

# The host-key algorithms paramiko may negotiate, by the key name known_hosts stores.
_ALGORITHMS_FOR_KEY_NAME = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}


@dataclass(slots=True)
class _KnownFile:
    keys: paramiko.HostKeys = field(default_factory=paramiko.HostKeys)
    revoked: set[bytes] = field(default_factory=set)


def known_hosts_name(hostname: str, port: int, host_key_alias: str | None = None) -> str:
    """The name a host's key is filed under: ``host`` on port 22, ``[host]:port`` otherwise."""
    if host_key_alias:
        return host_key_alias
    host = hostname[1:-1] if hostname.startswith("[") and hostname.endswith("]") else hostname
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    return str(key.fingerprint)


def _load_file(path: str) -> _KnownFile:
    """Parse one known_hosts file; unreadable lines are skipped, ``@revoked`` keys collected."""
    known = _KnownFile()
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return known
    except OSError as exc:
        log.warning("cannot read known_hosts file %s: %s", path, exc.strerror or exc)
        return known
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        marker = None
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
            line = line.strip()
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, lineno)
        except (paramiko.SSHException, binascii.Error, ValueError):
            entry = None
        if entry is None or entry.key is None:
            continue
        if marker == "@revoked":
            known.revoked.add(entry.key.asbytes())
        elif marker is None:
            for name in entry.hostnames:
                known.keys.add(name, entry.key.get_name(), entry.key)
        # @cert-authority lines are not supported: host certificates are not verified.
    return known


class KnownHosts:
    """A cache of parsed known_hosts files and the host-key policy applied to them."""

    def __init__(self) -> None:
        self._files: dict[str, _KnownFile] = {}
        # known_keys() answers by (name, files): paramiko's lookup scans every entry (an HMAC
        # each when hashed), and each connection asks several times. An enrolment clears them
        # and bumps the generation, so an answer looked up before it is never stored after it.
        self._answers: dict[tuple[str, tuple[str, ...]], list[paramiko.PKey]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def _file(self, path: str) -> _KnownFile:
        path = os.path.expanduser(path)
        with self._lock:
            known = self._files.get(path)
            if known is None:
                known = self._files[path] = _load_file(path)
            return known

    def known_keys(self, name: str, files: tuple[str, ...]) -> list[paramiko.PKey]:
        with self._lock:
            answer = self._answers.get((name, files))
            generation = self._generation
        if answer is not None:
            return answer
        found: list[paramiko.PKey] = []
        for path in files:
            entries = self._file(path).keys.lookup(name)
            if entries is not None:
                found.extend(entries[key_type] for key_type in entries)
        with self._lock:
            if generation == self._generation:
                self._answers[(name, files)] = found
        return found

    def preferred_key_types(
        self, name: str, files: tuple[str, ...], available: tuple[str, ...]
    ) -> tuple[str, ...]:
        """``available`` with the algorithms of keys already known for ``name`` first.

        So a server with several host keys offers the one we know, as OpenSSH arranges.
        """
        first: list[str] = []
        for key in self.known_keys(name, files):
            for algorithm in _ALGORITHMS_FOR_KEY_NAME.get(key.get_name(), (key.get_name(),)):
                if algorithm in available and algorithm not in first:
                    first.append(algorithm)
        return tuple(first) + tuple(a for a in available if a not in first)

    def verify(
        self,
        name: str,
        key: paramiko.PKey,
        files: tuple[str, ...],
        *,
        enrol_path: str | None,
        what: str,
        hashed: bool = False,
    ) -> None:
        """Return if ``key`` is known for ``name``; enrol it if allowed; else raise.

        ``what`` names the host for messages (``user@host:port``), ``enrol_path`` is the file
        a new key is appended to, None when enrolment is off; ``hashed`` writes the name
        hashed, as ssh does under ``HashKnownHosts yes``.
        """
        offered = fingerprint(key)
        if any(key.asbytes() in self._file(path).revoked for path in files):
            raise TransportError(
                ErrorKind.HOST_KEY_CHANGED, f"host key for {what} is marked @revoked ({offered})"
            )
        known = self.known_keys(name, files)
        if any(k.asbytes() == key.asbytes() for k in known):
            return
        if known:
            raise _changed(name, key, known, what)
        if enrol_path is None:
            raise TransportError(
                ErrorKind.HOST_KEY_UNKNOWN,
                f"host key for {what} is not in known_hosts ({key.get_name()} {offered}); "
                f"enrol it with `ugro-health check --accept-new` or ssh-keyscan",
            )
        self._enrol(name, key, enrol_path, hashed, what)

    def _enrol(self, name: str, key: paramiko.PKey, path: str, hashed: bool, what: str) -> None:
        path = os.path.expanduser(path)
        known = self._file(path)
        with self._lock:
            entries = known.keys.lookup(name)
            filed = [entries[key_type] for key_type in entries] if entries is not None else []
            if any(k.asbytes() == key.asbytes() for k in filed):
                return  # another thread enrolled this host a moment ago
            if filed:  # another thread enrolled another key: one of the two is an impostor
                raise _changed(name, key, filed, what)
            written = paramiko.HostKeys.hash_host(name) if hashed else name
            line = paramiko.hostkeys.HostKeyEntry([written], key).to_line()
            if line is None:
                raise TransportError(ErrorKind.SSH_ERROR, f"cannot record host key for {name}")
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                needs_newline = os.fstat(fd).st_size > 0 and not _ends_with_newline(path)
                os.write(fd, (("\n" if needs_newline else "") + line).encode())
            finally:
                os.close(fd)
            known.keys.add(name, key.get_name(), key)
            self._answers.clear()
            self._generation += 1
        log.info("enrolled host key for %s (%s) in %s", name, fingerprint(key), path)


def _changed(
    name: str, key: paramiko.PKey, known: list[paramiko.PKey], what: str
) -> TransportError:
    types = ", ".join(sorted({k.get_name() for k in known}))
    return TransportError(
        ErrorKind.HOST_KEY_CHANGED,
        f"HOST KEY CHANGED for {what}: offered {key.get_name()} {fingerprint(key)}, "
        f"known_hosts has a different {types} key for {name}; if the change is "
        f"expected, remove the old entry (ssh-keygen -R '{name}') and enrol again",
    )


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


class Identities:
    """The user's private keys, each parsed once per transport."""

    def __init__(self, defaults: tuple[str, ...]) -> None:
        self._defaults = defaults  # tried when present, not reported when absent
        self._cache: dict[str, paramiko.PKey | str] = {}  # path -> key, or why it is unusable
        self._lock = threading.Lock()

    def keys_for(self, paths: tuple[str, ...], notes: list[str]) -> list[tuple[str, paramiko.PKey]]:
        """The usable keys among ``paths``, labelled; why the others are not goes to ``notes``."""
        keys: list[tuple[str, paramiko.PKey]] = []
        for path in paths:
            key = self.load(path)
            if not isinstance(key, str):
                keys.append((path, key))
            elif key != "missing" or path not in self._defaults:
                notes.append(f"{path} ({key})")
        return keys

    def load(self, path: str) -> paramiko.PKey | str:
        with self._lock:
            cached = self._cache.get(path)
        if cached is not None:
            return cached
        full = os.path.expanduser(path)
        if not os.path.exists(full):
            return "missing"  # not cached: it may be created while `watch` runs
        result: paramiko.PKey | str
        try:
            result = paramiko.PKey.from_path(full)
        except Exception as exc:  # never log the exception text: it may quote key material
            encrypted = isinstance(exc, paramiko.PasswordRequiredException | TypeError)
            result = "encrypted: load it into ssh-agent" if encrypted else "unreadable"
            log.debug("identity file %s skipped: %s (%s)", path, result, type(exc).__name__)
        with self._lock:
            self._cache[path] = result
        return result


AGENT_REFRESH_S = 300.0  # how long the agent's key list (or why there is none) is kept
_SIGN_MARGIN_S = 0.3  # a signature's deadline ends this much before the caller's (see keys())
# An agent lists its keys in milliseconds: one silent this long (or the whole connect timeout,
# if shorter) is stuck (a prompt, a touch), not slow, and is not asked again for a while.
_AGENT_STUCK_S = 1.0


class AgentError(paramiko.AuthenticationException):
    """The ssh-agent failed or did not answer in time (listing its keys or signing)."""


class _AgentTimeout(AgentError):
    """The ssh-agent did not answer by the deadline."""


class SshAgent:
    """The user's ssh-agent (``SSH_AUTH_SOCK``), for authentication only: nothing is forwarded.

    paramiko's ``Agent`` waits on the agent's socket without a deadline, and a confirm prompt,
    a FIDO key waiting for a touch or a broken forwarded agent would hang a worker for ever (and
    ``check`` with it at exit, which joins its workers). Here each request opens its own
    connection under a deadline. The key list is asked for once and kept ``AGENT_REFRESH_S``
    (``watch`` sees keys added later); so is a failure, unless the caller's deadline cut the
    wait short (see ``_AGENT_STUCK_S``).
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout  # the longest one listing may wait
        self._lock = threading.Lock()
        self._path = ""
        self._listed: tuple[tuple[bytes, str], ...] | str = ()  # (blob, comment)s, or an error
        self._until = 0.0  # when the list above is asked for again (time.monotonic)

    def keys(self, deadline: float) -> list[tuple[str, paramiko.PKey]]:
        """The agent's keys, labelled; [] without an agent. Raises ``AgentError`` when it fails.

        Their signatures end ``_SIGN_MARGIN_S`` before ``deadline``: paramiko signs in its
        transport thread, and the caller, polling it, must see that error before its own timeout.
        """
        path = os.environ.get("SSH_AUTH_SOCK", "")
        if not path:
            return []
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise _AgentTimeout(
                f"ssh-agent at {path} did not answer in time (asked for another node)"
            )
        try:
            if path != self._path or time.monotonic() >= self._until:
                self._list(path, deadline)
            listed = self._listed
        finally:
            self._lock.release()
        if isinstance(listed, str):
            raise AgentError(listed)
        signer = _AgentCalls(path, deadline - _SIGN_MARGIN_S)
        keys = [paramiko.AgentKey(signer, blob, comment) for blob, comment in listed]
        return [(f"agent:{key.get_name()}", key) for key in keys]

    def _list(self, path: str, deadline: float) -> None:
        """Ask the agent for its keys; keep them, or why not (under ``_lock``)."""
        wait = min(self._timeout, deadline - time.monotonic())
        self._path = path
        self._until = time.monotonic() + AGENT_REFRESH_S
        try:
            self._listed = _AgentCalls(path, time.monotonic() + wait).list_keys()
        except AgentError as exc:
            log.debug("%s", exc)
            self._listed = str(exc)
            if isinstance(exc, _AgentTimeout) and wait < min(self._timeout, _AGENT_STUCK_S):
                self._until = 0.0  # the caller's deadline cut the wait short: ask again next time


class _AgentCalls(paramiko.agent.AgentSSH):
    """paramiko's agent client with each request on a connection of its own, bounded by
    ``deadline``. Agent keys sign through it (``AgentKey.agent``): paramiko signs in the
    transport's thread, which a silent agent must not hang either."""

    def __init__(self, path: str, deadline: float) -> None:
        super().__init__()
        self._path = path
        self._deadline = deadline

    def list_keys(self) -> tuple[tuple[bytes, str], ...]:
        """(blob, comment) of each key the agent holds; ``AgentError`` for any failure."""
        try:
            self._connect(None)  # type: ignore[attr-defined]  # asks through _send_message below
            return tuple((key.blob, key.comment) for key in self.get_keys())
        except AgentError:
            raise
        except (paramiko.SSHException, UnicodeDecodeError, ValueError) as exc:
            # e.g. SSH_AGENT_FAILURE to the key listing ("could not get keys from ssh-agent"),
            # or a key comment that is not UTF-8
            raise AgentError(f"ssh-agent at {self._path} failed: {exc}") from exc

    def _send_message(self, msg: Any) -> Any:
        with _agent_socket(self._path, self._deadline) as sock:
            one: Any = paramiko.agent.AgentSSH()  # its framing, on this request's connection
            one._conn = sock
            return one._send_message(msg)


@contextlib.contextmanager
def _agent_socket(path: str, deadline: float) -> Iterator[socket.socket]:
    """A connection to the agent at ``path``; its every call ends by ``deadline`` (else
    ``AgentError``, as is any failure talking to the agent)."""
    wait = deadline - time.monotonic()
    if wait <= 0:
        raise _AgentTimeout(f"ssh-agent at {path} not asked: no time left")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(wait)
        sock.connect(path)
        yield sock
    except AgentError:
        raise
    except TimeoutError as exc:
        raise _AgentTimeout(f"ssh-agent at {path} did not answer within {wait:.1f}s") from exc
    except OSError as exc:
        raise AgentError(f"ssh-agent at {path} unusable: {exc.strerror or exc}") from exc
    except paramiko.SSHException as exc:
        raise AgentError(f"ssh-agent at {path} failed: {exc}") from exc
    finally:
        sock.close()
