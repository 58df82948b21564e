"""Keys for the SSH transport: known_hosts (verify, enrol), the user's identities, ssh-agent.

Part of the SSH transport (imports paramiko; only the ``transport.ssh*`` modules import this one).
The policy is OpenSSH's ``StrictHostKeyChecking yes``, or ``accept-new`` when enrolment is asked
for, decided by ``ssh_known_hosts`` exactly as ssh decides it (the rules live there).
Files are parsed once per ``KnownHosts`` and cached; enrolment appends under a lock and updates
the cache, so concurrent probes of many nodes see one consistent view.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import paramiko

from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError
from ugro_health.transport.ssh_known_hosts import (
    ConfigError,
    Entry,
    Query,
    Status,
    Verdict,
    decide,
    hash_name,
    host_matches,
    host_port,
    hostkey_algorithms,
    order_hostkey_algorithms,
    parse_known_hosts,
)

log = logging.getLogger(__name__)


def known_hosts_name(hostname: str, port: int, host_key_alias: str | None = None) -> str:
    """The name a host's key is filed under: ``host`` on port 22, ``[host]:port`` otherwise."""
    if host_key_alias:
        return host_key_alias
    host = hostname[1:-1] if hostname.startswith("[") and hostname.endswith("]") else hostname
    return host_port(host.lower(), port)


def fingerprint(key: paramiko.PKey) -> str:
    return str(key.fingerprint)


def _read_entries(path: str) -> list[Entry]:
    """The usable lines of one known_hosts file; a missing file has none."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            return parse_known_hosts(fh.read(), path)
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot read known_hosts file %s: %s", path, exc.strerror or exc)
        return []


class KnownHosts:
    """A cache of parsed known_hosts files and OpenSSH's host-key policy applied to them."""

    def __init__(self) -> None:
        self._files: dict[str, list[Entry]] = {}  # by expanded path, under _lock
        # lookups answer by (name, files): a hashed line costs an HMAC per name, and each
        # connection asks several times. An enrolment clears them and bumps the generation, so
        # an answer looked up before it is never stored after it.
        self._answers: dict[tuple[str, tuple[str, ...]], list[Entry]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def lookup(self, name: str, files: tuple[str, ...]) -> list[Entry]:
        """The lines of ``files`` (in order) that name ``name``, as ssh's load_hostkeys."""
        with self._lock:
            answer = self._answers.get((name, files))
            generation = self._generation
            if answer is None:
                entries = [e for path in files for e in self._file_locked(path)]
        if answer is not None:
            return answer
        found = _naming(name, entries)
        with self._lock:
            if generation == self._generation:
                self._answers[(name, files)] = found
        return found

    def _file_locked(self, path: str) -> list[Entry]:
        full = os.path.expanduser(path)
        entries = self._files.get(full)
        if entries is None:
            entries = self._files[full] = _read_entries(full)
        return entries

    def key_types(
        self, query: Query, files: tuple[str, ...], available: tuple[str, ...], setting: str | None
    ) -> tuple[str, ...]:
        """The host-key algorithms to offer: ssh's list for HostKeyAlgorithms ``setting``,
        ordered as ssh orders it for the keys known for ``query``, limited to ``available``.
        The server picks the first it has: a host whose preferred key is not the one known is
        then refused, as by ssh, not accepted on another type."""
        try:
            algorithms = hostkey_algorithms(setting)
        except ConfigError as exc:
            raise TransportError(ErrorKind.SSH_ERROR, f"ssh config: {exc}") from None
        ordered = order_hostkey_algorithms(algorithms, self.lookup(query.name, files), setting)
        offered = tuple(a for a in ordered if a in available)
        if not offered:
            raise TransportError(
                ErrorKind.SSH_ERROR,
                f"ssh config: HostKeyAlgorithms {setting!r} leaves no algorithm ugro-health "
                f"supports ({', '.join(available)})",
            )
        return offered

    def verify(
        self,
        query: Query,
        key: paramiko.PKey,
        files: tuple[str, ...],
        *,
        enrol_path: str | None,
        what: str,
        hashed: bool = False,
    ) -> None:
        """Return if ssh (StrictHostKeyChecking yes, or accept-new with ``enrol_path``) would
        accept ``key`` for ``query``; enrol it where accept-new would; else raise.

        ``files`` are UserKnownHostsFile then GlobalKnownHostsFile; ``enrol_path`` is the
        first UserKnownHostsFile when enrolment is on, else None; ``what`` names the host for
        messages (``user@host:port``); ``hashed`` writes names hashed (HashKnownHosts yes).
        """
        verdict = decide(lambda n: self.lookup(n, files), query, key.asbytes(), hashed=hashed)
        if verdict.accepted:
            return
        if verdict.status is not Status.NEW:
            raise _refusal(query, key, what, verdict)
        if enrol_path is None or not verdict.enrol:
            raise _unknown(key, what, verdict.ca)  # ssh says so before looking at the IP
        if verdict.ip_status not in (None, Status.NEW):
            raise _refusal(query, key, what, verdict)  # ssh: enrols, then refuses; we don't write
        # A @cert-authority line for the host does not stop it: ssh's accept-new enrols the
        # plain key too whenever it gets no certificate that verifies.
        with self._lock:  # one enrolment at a time, decided again under the lock
            self._enrol_locked(query, key, files, enrol_path, what, hashed)
            self._answers.clear()
            self._generation += 1

    def _enrol_locked(
        self,
        query: Query,
        key: paramiko.PKey,
        files: tuple[str, ...],
        path: str,
        what: str,
        hashed: bool,
    ) -> None:
        def lookup(name: str) -> list[Entry]:
            return _naming(name, [e for p in files for e in self._file_locked(p)])

        verdict = decide(lookup, query, key.asbytes(), hashed=hashed)
        if verdict.accepted:
            return  # another thread enrolled this key a moment ago
        if verdict.status is not Status.NEW or not verdict.enrol:
            raise _refusal(query, key, what, verdict)  # another key came first: one is forged
        lines = [
            f"{hash_name(n, os.urandom(20)) if hashed else n} {key.get_name()} {key.get_base64()}"
            for n in verdict.enrol
        ]
        full = os.path.expanduser(path)
        _append(full, lines)
        cached = self._file_locked(full)
        cached.extend(e for line in lines for e in parse_known_hosts(line, full))
        for name in verdict.enrol:  # one line each: the operator sees what was trusted
            log.warning("enrolled host key for %s: %s %s in %s", name, key.get_name(),
                        fingerprint(key), path)  # fmt: skip


def _naming(name: str, entries: list[Entry]) -> list[Entry]:
    return [e for e in entries if host_matches(name, e.hosts)]


def _append(path: str, lines: list[str]) -> None:
    """Append ``lines`` to ``path`` (created 0600, its directory 0700), after a newline if the
    file does not end with one."""
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        needs_newline = os.fstat(fd).st_size > 0 and not _ends_with_newline(path)
        text = ("\n" if needs_newline else "") + "".join(line + "\n" for line in lines)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _unknown(key: paramiko.PKey, what: str, ca: Entry | None) -> TransportError:
    how = "enrol it with `ugro-health check --accept-new` or ssh-keyscan"
    if ca is not None:
        how = f"{ca.where} names a @cert-authority for it (certificates are not verified); {how}"
    return TransportError(
        ErrorKind.HOST_KEY_UNKNOWN,
        f"host key for {what} is not in known_hosts ({key.get_name()} {fingerprint(key)}); {how}",
    )


def _refusal(query: Query, key: paramiko.PKey, what: str, verdict: Verdict) -> TransportError:
    offered = f"{key.get_name()} {fingerprint(key)}"
    if Status.REVOKED in (verdict.status, verdict.ip_status):
        by_ip = verdict.status is not Status.REVOKED
        found = verdict.ip_found if by_ip else verdict.found
        at = f" ({found.where}{', its IP address (CheckHostIP)' if by_ip else ''})" if found else ""
        return TransportError(
            ErrorKind.HOST_KEY_CHANGED, f"host key for {what} is marked @revoked{at} ({offered})"
        )
    if verdict.status is Status.CHANGED and verdict.found is not None:
        name = query.name
        return TransportError(
            ErrorKind.HOST_KEY_CHANGED,
            f"HOST KEY CHANGED for {what}: offered {offered}, {verdict.found.where} has a "
            f"different {verdict.found.key_type} key for {name}; if the change is expected, "
            f"remove the old entry (ssh-keygen -R '{name}') and enrol again",
        )
    at = f" ({verdict.ip_found.where})" if verdict.ip_found is not None else ""
    return TransportError(
        ErrorKind.HOST_KEY_CHANGED,
        f"HOST KEY CHANGED for {what}: offered {offered}, which differs from the key filed "
        f"under its IP address {query.ip}{at} (CheckHostIP)",
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
