"""Host-name lookup with a deadline (the silent-name-server case is in tests/system)."""

from __future__ import annotations

import socket
import threading

import pytest

from ugro_health.transport.dns import lookup


def dns_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("ugro-dns-")]


@pytest.mark.parametrize("literal", ["127.0.0.1", "::1"])
def test_an_address_literal_is_returned_without_a_lookup_thread(literal: str):
    before = dns_threads()
    ((family, kind, _, _, addr),) = lookup(literal, 22, timeout=1.0)[:1]
    assert kind == socket.SOCK_STREAM
    assert family == (socket.AF_INET6 if ":" in literal else socket.AF_INET)
    assert addr[:2] == (literal, 22)
    assert dns_threads() == before


def test_a_name_from_the_hosts_file_resolves():
    addresses = {info[4][0] for info in lookup("localhost", 2222, timeout=5.0)}
    assert addresses & {"127.0.0.1", "::1"}


def test_a_lookup_that_fails_raises_the_resolvers_own_error():
    with pytest.raises(socket.gaierror, match=r"invalid host name 'bad\.\.name'"):
        lookup("bad..name", 22, timeout=5.0)  # an empty label: refused before any query
