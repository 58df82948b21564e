"""known_hosts as OpenSSH reads it: lines, host patterns, and its host-key decision.

Pure (standard library only, no I/O): part of the SSH transport, imported by ``ssh_hostkeys``.
Each rule follows OpenSSH's client (hostfile.c, match.c, sshconnect.c ``check_host_key``,
sshconnect2.c ``order_hostkeyalgs``, kex-names.c ``kex_assemble_names``), so that a host key is
accepted, refused or enrolled exactly where ``ssh -o StrictHostKeyChecking=yes|accept-new``
would, or, where noted, refused where ssh would go on (never the other way).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace

CA_MARKER = "@cert-authority"
REVOKED_MARKER = "@revoked"
_CERT_SUFFIX = "-cert-v01@openssh.com"
# The key types sshkey_read() accepts, by the name a line may give (rsa-sha2-* are RSA keys).
_PLAIN_TYPES = {
    "ssh-ed25519": "ssh-ed25519",
    "ssh-rsa": "ssh-rsa",
    "rsa-sha2-256": "ssh-rsa",
    "rsa-sha2-512": "ssh-rsa",
    "ssh-dss": "ssh-dss",
    "ecdsa-sha2-nistp256": "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384": "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521": "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com": "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com": "sk-ecdsa-sha2-nistp256@openssh.com",
    "webauthn-sk-ecdsa-sha2-nistp256@openssh.com": "sk-ecdsa-sha2-nistp256@openssh.com",
}
# ssh's HostKeyAlgorithms default (OpenSSH 9.x, `ssh -G`), and every name it knows (`ssh -Q`),
# in its order: a pattern in HostKeyAlgorithms expands to the matching names in this order.
DEFAULT_HOSTKEY_ALGORITHMS = (
    *(
        f"{name}{_CERT_SUFFIX}"
        for name in (
            "ssh-ed25519",
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp384",
            "ecdsa-sha2-nistp521",
            "sk-ssh-ed25519",
            "sk-ecdsa-sha2-nistp256",
            "rsa-sha2-512",
            "rsa-sha2-256",
        )
    ),
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
)
ALL_HOSTKEY_ALGORITHMS = (
    "ssh-ed25519",
    "ssh-ed25519-cert-v01@openssh.com",
    "sk-ssh-ed25519@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "webauthn-sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
    "ssh-dss-cert-v01@openssh.com",
    "ssh-rsa",
    "ssh-rsa-cert-v01@openssh.com",
    "rsa-sha2-256",
    "rsa-sha2-256-cert-v01@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-512-cert-v01@openssh.com",
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One usable known_hosts line."""

    path: str
    line: int
    marker: str  # "", CA_MARKER or REVOKED_MARKER
    hosts: str  # the host field as written: patterns, or one |1|salt|hash
    key_type: str  # the plain key type (ssh-rsa for rsa-sha2-*; a certificate's own type)
    blob: bytes  # the public key as sent on the wire

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def parse_known_hosts(text: str, path: str) -> list[Entry]:
    """The lines of one file that OpenSSH can use; the others are skipped, as ssh skips them."""
    entries: list[Entry] = []
    for lineno, raw in enumerate(text.split("\n"), 1):
        entry = _parse_line(raw, path, lineno)
        if entry is not None:
            entries.append(entry)
    return entries


def _parse_line(raw: str, path: str, lineno: int) -> Entry | None:
    line = raw.lstrip(" \t")
    if not line or line.startswith("#"):
        return None
    marker = ""
    if line.startswith("@"):
        marker, _, line = _split_field(line)
        if marker not in (CA_MARKER, REVOKED_MARKER):
            return None
    hosts, _, rest = _split_field(line)
    key_name, _, rest = _split_field(rest)
    encoded, _, _comment = _split_field(rest)
    if not hosts or not encoded or hosts.startswith("#") or key_name.startswith("#"):
        return None
    plain = _PLAIN_TYPES.get(key_name.removesuffix(_CERT_SUFFIX))
    try:
        # ssh's b64_pton skips white space: a CRLF line still reads
        blob = base64.b64decode("".join(encoded.split()), validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        blob_type = blob[4 : 4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        return None
    if plain is None or _PLAIN_TYPES.get(blob_type.removesuffix(_CERT_SUFFIX)) != plain:
        return None
    # A certificate on a plain line keeps its certificate type: it never equals a plain key.
    key_type = blob_type if blob_type.endswith(_CERT_SUFFIX) else plain
    return Entry(path, lineno, marker, hosts, key_type, blob)


def _split_field(text: str) -> tuple[str, str, str]:
    """The first space/tab-separated field of ``text`` and what follows it (leading blanks cut)."""
    end = len(text)
    for sep in " \t":
        found = text.find(sep)
        if 0 <= found < end:
            end = found
    rest = text[end:].lstrip(" \t")
    return text[:end], text[end : end + 1], rest


def match_pattern(string: str, pattern: str) -> bool:
    """OpenSSH's match_pattern: ``*`` any run, ``?`` one character, everything else literal."""
    s, p = 0, 0
    star_p, star_s = -1, 0
    while s < len(string):
        if p < len(pattern) and (pattern[p] == "?" or pattern[p] == string[s]):
            s, p = s + 1, p + 1
        elif p < len(pattern) and pattern[p] == "*":
            star_p, star_s = p, s
            p += 1
        elif star_p >= 0:
            star_s += 1
            s, p = star_s, star_p + 1
        else:
            return False
    return all(c == "*" for c in pattern[p:])


def match_pattern_list(string: str, patterns: str, *, lower: bool = True) -> int:
    """1 when a pattern of the comma list matches, -1 when a negated one does (which wins), 0
    when none does. The patterns are lower-cased, as ssh does for host names."""
    got_positive = 0
    for sub in patterns.split(","):
        negated = sub.startswith("!")
        sub = sub[1:] if negated else sub
        if len(sub) >= 1023:  # ssh's buffer: a longer pattern matches nothing at all
            return 0
        if match_pattern(string, sub.lower() if lower else sub):
            if negated:
                return -1
            got_positive = 1
    return got_positive


def hash_name(name: str, salt: bytes) -> str:
    """``|1|salt|hash``: the form HashKnownHosts writes (HMAC-SHA1 of the name under salt)."""
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def host_matches(name: str, hosts: str) -> bool:
    """Whether a line's host field names ``name`` (hashed: an exact name; else patterns)."""
    if hosts.startswith("|"):
        parts = hosts.split("|")
        if len(parts) != 4 or parts[1] != "1":
            return False  # a bad hash: ssh skips the line
        try:
            salt = base64.b64decode(parts[2], validate=True)
        except binascii.Error:
            return False
        return hmac.compare_digest(hash_name(name, salt), hosts)
    return match_pattern_list(name.lower(), hosts) == 1


def host_port(host: str, port: int) -> str:
    """ssh's put_host_port: ``host`` on port 22 (or 0: no port), ``[host]:port`` otherwise."""
    return host if port in (0, 22) else f"[{host}]:{port}"


def plain_type(algorithm: str) -> str:
    """The key type an algorithm signs with (``rsa-sha2-512`` -> ``ssh-rsa``)."""
    return _PLAIN_TYPES.get(algorithm.removesuffix(_CERT_SUFFIX), algorithm)


class ConfigError(ValueError):
    """A HostKeyAlgorithms value ssh itself would refuse."""


def hostkey_algorithms(setting: str | None) -> tuple[str, ...]:
    """ssh's host-key algorithm list for a HostKeyAlgorithms value (``+``, ``-``, ``^`` or a
    list of names and patterns), as kex_assemble_names builds it."""
    default = DEFAULT_HOSTKEY_ALGORITHMS
    if not setting:
        return default
    if setting.startswith("-"):
        return tuple(a for a in default if match_pattern_list(a, setting[1:], lower=False) != 1)
    if setting.startswith("+"):
        patterns = [*default, *setting[1:].split(",")]
    elif setting.startswith("^"):
        patterns = [*setting[1:].split(","), *default]
    else:
        patterns = setting.split(",")
    chosen: dict[str, None] = {}
    for pattern in patterns:
        if pattern.startswith("!"):
            raise ConfigError(f"HostKeyAlgorithms {setting!r}: negation is not allowed here")
        chosen.update(dict.fromkeys(a for a in ALL_HOSTKEY_ALGORITHMS if match_pattern(a, pattern)))
    if not chosen:
        raise ConfigError(f"HostKeyAlgorithms {setting!r} names no known algorithm")
    return tuple(chosen)


def order_hostkey_algorithms(
    algorithms: tuple[str, ...], known: list[Entry], setting: str | None = None
) -> tuple[str, ...]:
    """ssh's order_hostkeyalgs: unless a key of the first algorithm's type is known, the
    algorithms of known key types (all certificate ones under a CA line) go first, each group
    in ``algorithms``' own order. ``known`` are the lines naming the host. ssh does this only
    when HostKeyAlgorithms (``setting``) is unset or only adds (+) or removes (-) names: a list
    of its own, or ``^``, is offered as it stands."""
    if setting and not setting.startswith(("+", "-")):
        return algorithms
    plain = _known_types(known)
    if not algorithms or plain_type(algorithms[0]) in plain:
        return algorithms
    ca = any(e.marker == CA_MARKER for e in known)
    first = [a for a in algorithms if (ca and a.endswith(_CERT_SUFFIX)) or plain_type(a) in plain]
    return tuple(first) + tuple(a for a in algorithms if a not in first)


def _known_types(known: list[Entry]) -> set[str]:
    """The key types ssh's lookup_key_in_hostkeys_by_type finds: a type counts only if the
    first plain line of that type holds a key no @revoked line names."""
    revoked = {e.blob for e in known if e.marker == REVOKED_MARKER}
    first: dict[str, bytes] = {}
    for entry in known:
        if not entry.marker:
            first.setdefault(entry.key_type, entry.blob)
    return {key_type for key_type, blob in first.items() if blob not in revoked}


class Status(enum.Enum):
    OK = "ok"
    NEW = "new"
    CHANGED = "changed"
    REVOKED = "revoked"


def key_status(entries: list[Entry], blob: bytes) -> tuple[Status, Entry | None]:
    """check_key_in_hostkeys for a plain key: OK if a line holds it, else CHANGED if any plain
    line (of any type) names the host, else NEW; REVOKED over all when a @revoked line holds it.
    The entry returned is the matching line, else the last offending one."""
    status, found = Status.NEW, None
    for entry in entries:
        if entry.marker:
            continue
        if entry.blob == blob:
            status, found = Status.OK, entry
            break
        status, found = Status.CHANGED, entry
    if any(e.marker == REVOKED_MARKER and e.blob == blob for e in entries):
        return Status.REVOKED, next(e for e in entries if e.marker == REVOKED_MARKER)
    return status, found


@dataclass(frozen=True, slots=True)
class Query:
    """What ssh looks a host up by."""

    hostname: str  # the host connected to (HostName), lower-cased
    port: int
    alias: str | None = None  # HostKeyAlias
    ip: str | None = None  # the peer's numeric address; None via a proxy or jump host
    check_host_ip: bool = False  # CheckHostIP (ssh turns it off for loopback peers)
    writable: bool = True  # a UserKnownHostsFile exists to enrol into

    @property
    def name(self) -> str:
        return self.alias or host_port(self.hostname, self.port)


def host_key_query(
    hostname: str,
    port: int,
    alias: str | None,
    check_host_ip: bool,
    peer: str | None,
    writable: bool,
) -> Query:
    """What ssh looks a host's key up by; ``peer`` is the address connected to (None through
    a jump host or proxy, where ssh has none either and CheckHostIP is off)."""
    check_ip = check_host_ip and peer is not None and not _is_local(peer)
    return Query(
        hostname=hostname.strip("[]").lower(),
        port=port,
        alias=alias,
        ip=peer if check_ip else None,
        check_host_ip=check_ip,
        writable=writable,
    )


def _is_local(ip: str) -> bool:
    """ssh's sockaddr_is_local: 127/8 or ::1. An IPv4-mapped ::ffff:127.x is not (Python 3.13's
    is_loopback says it is)."""
    address = ipaddress.ip_address(ip.partition("%")[0])
    return address.is_loopback if address.version == 4 else address == ipaddress.ip_address("::1")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision for one offered key, under ``StrictHostKeyChecking yes|accept-new``.

    ``status`` is the host name's; ``ip_status`` the IP address's under CheckHostIP (None when
    not checked). ``found`` is the matching or offending line. ``enrol`` are the names ssh's
    accept-new writes ((name,), (name,ip) hashed apart, or ("name,ip",)), empty when it may not.
    """

    status: Status
    found: Entry | None = None
    ip_status: Status | None = None
    ip_found: Entry | None = None
    enrol: tuple[str, ...] = ()
    ca: Entry | None = None  # a @cert-authority line naming the host

    @property
    def accepted(self) -> bool:
        return self.status is Status.OK and self.ip_status not in (Status.CHANGED, Status.REVOKED)


_UNWRITABLE = set("@?*#[]|'\"\\")  # ssh records no host name holding one of these


def decide(
    lookup: Callable[[str], list[Entry]], query: Query, blob: bytes, *, hashed: bool = False
) -> Verdict:
    """ssh's check_host_key for a plain key. ``lookup(name)`` gives the lines naming ``name``
    in ssh's file order (UserKnownHostsFile then GlobalKnownHostsFile); ``hashed`` is
    HashKnownHosts (how ``enrol`` names are written: apart when hashed)."""
    verdict = _check(lookup, query, blob, hashed, clobber=False)
    if verdict.status is Status.NEW and verdict.enrol:
        ca = next((e for e in lookup(query.name) if e.marker == CA_MARKER), None)
        return replace(verdict, ca=ca)
    return verdict


def _check(
    lookup: Callable[[str], list[Entry]], query: Query, blob: bytes, hashed: bool, clobber: bool
) -> Verdict:
    port = 0 if clobber else query.port
    host = query.alias or host_port(query.hostname, port)
    ip = host_port(query.ip, port) if query.ip is not None else None
    check_ip = query.check_host_ip and ip is not None and query.hostname != ip
    status, found = key_status(lookup(host), blob)
    ip_status, ip_found = key_status(lookup(ip), blob) if check_ip and ip else (None, None)
    if status is Status.NEW and not clobber:
        if query.alias is None and port not in (0, 22):
            # ssh's "checking without port identifier": a key filed for the bare host will do
            retry = _check(lookup, query, blob, hashed, clobber=True)
            if retry.accepted:
                return retry
            if query.hostname == query.ip:  # that retry turned CheckHostIP off for good
                check_ip, ip_status, ip_found = False, None, None
        writable = query.writable and not (_UNWRITABLE & set(query.hostname))
        if writable:
            enrol = _enrol_names(host, ip if check_ip else None, ip_status, hashed)
            return Verdict(status, found, ip_status, ip_found, enrol)
    return Verdict(status, found, ip_status, ip_found)


def _enrol_names(
    host: str, ip: str | None, ip_status: Status | None, hashed: bool
) -> tuple[str, ...]:
    if ip is None or ip_status is not Status.NEW:
        return (host,)
    return (host, ip) if hashed else (f"{host},{ip}",)
