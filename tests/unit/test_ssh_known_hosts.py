"""known_hosts read and decided as OpenSSH does (ssh_known_hosts), on crafted files.

The rules come from OpenSSH's hostfile.c, match.c, sshconnect.c and sshconnect2.c; the
integration test test_host_key_differential.py checks the same decisions against ssh itself.
"""

from __future__ import annotations

import base64
import struct

import pytest

from ugro_health.transport.ssh_known_hosts import (
    DEFAULT_HOSTKEY_ALGORITHMS,
    ConfigError,
    Entry,
    Query,
    Status,
    decide,
    hash_name,
    host_key_query,
    host_matches,
    hostkey_algorithms,
    match_pattern,
    match_pattern_list,
    order_hostkey_algorithms,
    parse_known_hosts,
)


def blob(key_type: str, body: bytes) -> bytes:
    name = key_type.encode()
    return struct.pack(">I", len(name)) + name + struct.pack(">I", len(body)) + body


ED_A, ED_B = blob("ssh-ed25519", b"A" * 32), blob("ssh-ed25519", b"B" * 32)
RSA_A = blob("ssh-rsa", b"rsa-a")
ECDSA_A = blob("ecdsa-sha2-nistp256", b"ecdsa-a")


def line(hosts: str, key: bytes, marker: str = "", key_type: str | None = None) -> str:
    kind = key_type or key[4 : 4 + struct.unpack(">I", key[:4])[0]].decode()
    return f"{marker + ' ' if marker else ''}{hosts} {kind} {base64.b64encode(key).decode()}"


def db(*lines: str) -> tuple[list[Entry], object]:
    entries = parse_known_hosts("\n".join(lines), "kh")

    def lookup(name: str) -> list[Entry]:
        return [e for e in entries if host_matches(name, e.hosts)]

    return entries, lookup


def verdict(lines: list[str], query: Query, key: bytes, hashed: bool = False) -> object:
    _, lookup = db(*lines)
    return decide(lookup, query, key, hashed=hashed)  # type: ignore[arg-type]


Q = Query(hostname="gpu1", port=22)
QP = Query(hostname="10.0.0.5", port=2222)


def test_patterns_are_star_and_question_mark_only() -> None:
    assert match_pattern("[10.0.0.5]:2222", "[10.0.0.?]:*")
    assert not match_pattern("[10.0.0.15]:2222", "[10.0.0.?]:*")
    assert match_pattern("gpu1", "gpu[1]") is False  # brackets are literal
    assert match_pattern("", "*") and not match_pattern("", "?")
    assert (
        match_pattern("abcabd", "*abd")
        and match_pattern("a", "a*")
        and not match_pattern("ab", "a")
    )


def test_a_negated_pattern_that_matches_wins_over_any_positive() -> None:
    assert match_pattern_list("gpu1", "gpu*,!gpu1") == -1
    assert match_pattern_list("gpu2", "gpu*,!gpu1") == 1
    assert match_pattern_list("gpu2", "!gpu1") == 0  # a negation alone names nothing
    assert match_pattern_list("gpu1", "GPU1") == 1  # patterns are lower-cased
    _, lookup = db(line("gpu*,!gpu1", ED_A))
    assert lookup("gpu1") == [] and len(lookup("gpu2")) == 1  # type: ignore[operator]


def test_hashed_names_match_exactly_and_bad_hashes_are_skipped() -> None:
    hashed = hash_name("[10.0.0.5]:2222", b"s" * 20)
    assert host_matches("[10.0.0.5]:2222", hashed)
    assert not host_matches("10.0.0.5", hashed)
    assert not host_matches("x", "|1|notbase64!|abc") and not host_matches("x", "|2|a|b")


def test_parser_skips_what_ssh_skips_and_keeps_markers() -> None:
    entries, _ = db(
        "# comment",
        "   ",
        "gpu1",  # truncated
        "gpu1 ssh-ed25519",  # no key
        f"gpu1 ssh-rsa {base64.b64encode(ED_A).decode()}",  # declared type differs from the key
        "gpu1 ssh-ed25519 not-base64!",
        "@bogus gpu1 " + line("", ED_A).strip(),
        "gpu1 2048 35 1234",  # RSA1
        line("gpu1", ED_A) + " comment here",
        "\t" + line("gpu2", RSA_A, key_type="rsa-sha2-512"),
        line("*", ED_B, "@revoked"),
        line("*.lab", ED_B, "@cert-authority"),
    )
    assert [(e.line, e.marker, e.hosts, e.key_type) for e in entries] == [
        (9, "", "gpu1", "ssh-ed25519"),
        (10, "", "gpu2", "ssh-rsa"),
        (11, "@revoked", "*", "ssh-ed25519"),
        (12, "@cert-authority", "*.lab", "ssh-ed25519"),
    ]
    assert entries[0].where == "kh:9"


def test_a_crlf_line_reads_as_ssh_reads_it() -> None:
    entries, _ = db(line("gpu1", ED_A) + "\r")  # ssh's base64 decoder skips the CR
    assert [e.blob for e in entries] == [ED_A]


def test_known_unknown_changed() -> None:
    assert verdict([line("gpu1", ED_A)], Q, ED_A).status is Status.OK  # type: ignore[attr-defined]
    assert verdict([line("gpu2", ED_A)], Q, ED_A).status is Status.NEW  # type: ignore[attr-defined]
    changed = verdict([line("gpu1", ED_B)], Q, ED_A)
    assert changed.status is Status.CHANGED and changed.found.line == 1  # type: ignore[attr-defined]


def test_any_of_several_keys_of_one_type_is_accepted() -> None:
    lines = [line("gpu1", ED_B), line("gpu1", ED_A), line("gpu*", ED_B)]
    assert verdict(lines, Q, ED_A).accepted  # type: ignore[attr-defined]


def test_a_key_of_another_type_known_is_a_changed_key_not_a_new_one() -> None:
    # ssh's check_key_in_hostkeys: any plain line for the host that differs -> HOST_CHANGED
    v = verdict([line("gpu1", RSA_A)], Q, ED_A)
    assert v.status is Status.CHANGED and not v.enrol  # type: ignore[attr-defined]


def test_revoked_applies_to_the_hosts_its_pattern_names() -> None:
    v = verdict([line("gpu1", ED_A), line("*", ED_A, "@revoked")], Q, ED_A)
    assert v.status is Status.REVOKED  # type: ignore[attr-defined]
    v = verdict([line("gpu1", ED_A), line("gpu2", ED_A, "@revoked")], Q, ED_A)
    assert v.accepted  # type: ignore[attr-defined]
    v = verdict([line("*", ED_A, "@revoked")], Q, ED_A)  # revoked, never enrolled
    assert v.status is Status.REVOKED and not v.enrol  # type: ignore[attr-defined]


def test_non_standard_port_names_and_the_portless_retry() -> None:
    assert verdict([line("[10.0.0.5]:2222", ED_A)], QP, ED_A).accepted  # type: ignore[attr-defined]
    assert verdict([line("[10.0.0.?]:*", ED_A)], QP, ED_A).accepted  # type: ignore[attr-defined]
    # ssh retries without the port: a matching key filed for the bare host is accepted...
    assert verdict([line("10.0.0.5", ED_A)], QP, ED_A).accepted  # type: ignore[attr-defined]
    # ...a different one there does not refuse: the host is new under its [host]:port name
    v = verdict([line("10.0.0.5", ED_B)], QP, ED_A)
    assert v.status is Status.NEW and v.enrol == ("[10.0.0.5]:2222",)  # type: ignore[attr-defined]
    # with HostKeyAlias there is no retry, and the alias is the name
    alias = Query(hostname="10.0.0.5", port=2222, alias="gpu5")
    assert verdict([line("10.0.0.5", ED_A)], alias, ED_A).enrol == ("gpu5",)  # type: ignore[attr-defined]
    assert verdict([line("gpu5", ED_A)], alias, ED_A).accepted  # type: ignore[attr-defined]


def test_check_host_ip() -> None:
    ip = Query(hostname="gpu1", port=22, ip="10.0.0.5", check_host_ip=True)
    # known host, IP unknown: accepted
    assert verdict([line("gpu1", ED_A)], ip, ED_A).accepted  # type: ignore[attr-defined]
    # known host, a different key under the IP: refused (strict checking)
    v = verdict([line("gpu1", ED_A), line("10.0.0.5", ED_B)], ip, ED_A)
    assert not v.accepted and v.ip_status is Status.CHANGED  # type: ignore[attr-defined]
    # new host, IP new: accept-new writes "host,ip" (hashed: two lines)
    assert verdict([], ip, ED_A).enrol == ("gpu1,10.0.0.5",)  # type: ignore[attr-defined]
    assert verdict([], ip, ED_A, hashed=True).enrol == ("gpu1", "10.0.0.5")  # type: ignore[attr-defined]
    # new host, IP known with another key: not accepted
    v = verdict([line("10.0.0.5", ED_B)], ip, ED_A)
    assert v.status is Status.NEW and v.ip_status is Status.CHANGED  # type: ignore[attr-defined]
    # CheckHostIP off: the IP's line is not consulted
    off = Query(hostname="gpu1", port=22, ip="10.0.0.5")
    assert verdict([line("10.0.0.5", ED_B)], off, ED_A).enrol == ("gpu1",)  # type: ignore[attr-defined]
    # connected by address: the host name is the IP, nothing more to check
    same = Query(hostname="10.0.0.5", port=22, ip="10.0.0.5", check_host_ip=True)
    assert verdict([], same, ED_A).enrol == ("10.0.0.5",)  # type: ignore[attr-defined]


def test_cert_authority_lines_are_reported_not_trusted() -> None:
    v = verdict([line("*.lab", ED_B, "@cert-authority")], Query("gpu1.lab", 22), ED_A)
    assert v.status is Status.NEW and v.ca is not None and v.ca.line == 1  # type: ignore[attr-defined]
    # a CA line never makes a plain key known or changed
    v = verdict([line("gpu1", ED_A, "@cert-authority")], Q, ED_A)
    assert v.status is Status.NEW  # type: ignore[attr-defined]


def test_names_ssh_will_not_record_are_not_enrolled() -> None:
    assert verdict([], Query("gpu*1", 22), ED_A).enrol == ()  # type: ignore[attr-defined]
    assert verdict([], Query("gpu1", 22, writable=False), ED_A).enrol == ()  # type: ignore[attr-defined]


def test_host_key_algorithm_settings_follow_kex_assemble_names() -> None:
    assert hostkey_algorithms(None) == DEFAULT_HOSTKEY_ALGORITHMS
    assert "ssh-rsa" not in DEFAULT_HOSTKEY_ALGORITHMS
    assert hostkey_algorithms("+ssh-rsa")[-1] == "ssh-rsa"
    assert hostkey_algorithms("^rsa-sha2-256")[0] == "rsa-sha2-256"
    assert "ssh-ed25519" not in hostkey_algorithms("-ssh-ed25519*")
    assert hostkey_algorithms("rsa-sha2-*,ssh-ed25519") == (
        "rsa-sha2-256",
        "rsa-sha2-256-cert-v01@openssh.com",
        "rsa-sha2-512",
        "rsa-sha2-512-cert-v01@openssh.com",
        "ssh-ed25519",
    )
    for bad in ("!ssh-rsa", "nonesuch"):
        with pytest.raises(ConfigError):
            hostkey_algorithms(bad)


def test_known_key_types_go_first_in_sshs_own_order() -> None:
    algorithms = ("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256")
    entries, _ = db(line("gpu1", RSA_A), line("gpu1", ECDSA_A))
    # file order is rsa then ecdsa: ssh's preference (ecdsa before rsa) is kept
    assert order_hostkey_algorithms(algorithms, entries) == (
        "ecdsa-sha2-nistp256",
        "rsa-sha2-512",
        "rsa-sha2-256",
        "ssh-ed25519",
    )
    # the first algorithm's type known: the list as it is
    ed, _ = db(line("gpu1", ED_A), line("gpu1", RSA_A))
    assert order_hostkey_algorithms(algorithms, ed) == algorithms
    # an explicit HostKeyAlgorithms list, or ^, is offered as written; + and - are reordered
    assert order_hostkey_algorithms(algorithms, entries, "ssh-ed25519,rsa-sha2-512") == algorithms
    assert order_hostkey_algorithms(algorithms, entries, "^ssh-ed25519") == algorithms
    assert order_hostkey_algorithms(algorithms, entries, "+ssh-rsa")[0] == "ecdsa-sha2-nistp256"


def test_a_revoked_known_key_does_not_count_for_the_order() -> None:
    algorithms = ("ssh-ed25519", "rsa-sha2-512")
    entries, _ = db(line("gpu1", ED_A), line("gpu1", RSA_A), line("gpu1", ED_A, "@revoked"))
    assert order_hostkey_algorithms(algorithms, entries) == ("rsa-sha2-512", "ssh-ed25519")


def test_check_host_ip_is_off_for_loopback_peers_and_without_a_socket() -> None:
    on = host_key_query("GPU1", 22, None, True, "10.0.0.5", True)
    assert (on.hostname, on.ip, on.check_host_ip) == ("gpu1", "10.0.0.5", True)
    for peer in ("127.0.0.2", "::1", None):
        assert not host_key_query("gpu1", 22, None, True, peer, True).check_host_ip
    # ssh's sockaddr_is_local knows ::1 only: an IPv4-mapped loopback is checked
    assert host_key_query("gpu1", 22, None, True, "::ffff:127.0.0.1", True).check_host_ip
    assert not host_key_query("gpu1", 22, None, False, "10.0.0.5", True).check_host_ip
