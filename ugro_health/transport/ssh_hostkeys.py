"""Keys for the SSH transport: known_hosts (verify, enrol) and the user's identities.

Part of the SSH transport (imports paramiko; only the ``transport.ssh*`` modules import this one).
The policy is OpenSSH's ``StrictHostKeyChecking yes``, or ``accept-new`` when enrolment is asked
for: a changed or revoked key is refused always, an unknown one unless enrolment is on.
Files are parsed once per ``KnownHosts`` and cached; enrolment appends under a lock and updates
the cache, so concurrent probes of many nodes see one consistent view.
"""

from __future__ import annotations

import binascii
import logging
import os
import threading
from dataclasses import dataclass, field

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
        # each when hashed), and each connection asks several times.
        self._answers: dict[tuple[str, tuple[str, ...]], list[paramiko.PKey]] = {}
        self._lock = threading.Lock()

    def _file(self, path: str) -> _KnownFile:
        path = os.path.expanduser(path)
        with self._lock:
            known = self._files.get(path)
            if known is None:
                known = self._files[path] = _load_file(path)
            return known

    def known_keys(self, name: str, files: tuple[str, ...]) -> list[paramiko.PKey]:
        answer = self._answers.get((name, files))
        if answer is not None:
            return answer
        found: list[paramiko.PKey] = []
        for path in files:
            entries = self._file(path).keys.lookup(name)
            if entries is not None:
                found.extend(entries[key_type] for key_type in entries)
        with self._lock:
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
            types = ", ".join(sorted({k.get_name() for k in known}))
            raise TransportError(
                ErrorKind.HOST_KEY_CHANGED,
                f"HOST KEY CHANGED for {what}: offered {key.get_name()} {offered}, "
                f"known_hosts has a different {types} key for {name}; if the change is "
                f"expected, remove the old entry (ssh-keygen -R '{name}') and enrol again",
            )
        if enrol_path is None:
            raise TransportError(
                ErrorKind.HOST_KEY_UNKNOWN,
                f"host key for {what} is not in known_hosts ({key.get_name()} {offered}); "
                f"enrol it with `ugro-health check --accept-new` or ssh-keyscan",
            )
        self._enrol(name, key, enrol_path, hashed)

    def _enrol(self, name: str, key: paramiko.PKey, path: str, hashed: bool) -> None:
        path = os.path.expanduser(path)
        known = self._file(path)
        with self._lock:
            entries = known.keys.lookup(name)
            if entries is not None and key.get_name() in entries:
                return  # another thread enrolled this host a moment ago
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
        log.info("enrolled host key for %s (%s) in %s", name, fingerprint(key), path)


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


class Identities:
    """The user's private keys, each parsed once per transport; and the ssh-agent's keys."""

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


def open_agent() -> paramiko.Agent | None:
    """The user's ssh-agent, for authentication only (nothing is ever forwarded to it)."""
    if not os.environ.get("SSH_AUTH_SOCK"):
        return None
    try:
        return paramiko.Agent()
    except (paramiko.SSHException, OSError) as exc:
        log.debug("ssh-agent unavailable: %s", exc)
        return None
