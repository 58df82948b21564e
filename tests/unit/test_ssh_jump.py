"""ssh_jump: what identifies a shared hop, and nothing sent for a channel after its CLOSE.

The sharing itself is tested against real sshd processes (tests/integration/
test_ssh_jump_sharing.py). Here a real (unstarted) paramiko transport over a socket pair records
the packets it would put on the wire, so paramiko's close race can be played in a fixed order:
a data packet built before another thread closed the channel reaches the wire after the CLOSE
(OpenSSH then ends the whole shared connection, "data packet referred to nonexistent channel").
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace

import paramiko
import pytest
from paramiko.common import (
    MSG_CHANNEL_CLOSE,
    MSG_CHANNEL_DATA,
    MSG_CHANNEL_WINDOW_ADJUST,
    MSG_IGNORE,
)

from ugro_health.transport.ssh_jump import ChannelSafeTransport, hop_key
from ugro_health.transport.ssh_resolve import ResolvedHost


def message(kind: int, recipient: int | None = None) -> paramiko.Message:
    m = paramiko.Message()
    m.add_byte(bytes([kind]))
    if recipient is not None:
        m.add_int(recipient)
    m.add_string(b"payload")
    return m


@pytest.fixture
def wire() -> Iterator[tuple[ChannelSafeTransport, list[tuple[int, int | None]]]]:
    ours, theirs = socket.socketpair()
    transport = ChannelSafeTransport(ours)
    sent: list[tuple[int, int | None]] = []

    def record(m: paramiko.Message) -> None:
        raw = m.asbytes()
        recipient = int.from_bytes(raw[1:5], "big") if raw[0] != MSG_IGNORE else None
        sent.append((raw[0], recipient))

    transport.packetizer.send_message = record
    try:
        yield transport, sent
    finally:
        ours.close()
        theirs.close()


def test_nothing_is_sent_for_a_channel_after_its_close(
    wire: tuple[ChannelSafeTransport, list[tuple[int, int | None]]],
) -> None:
    transport, sent = wire
    transport._send_message(message(MSG_CHANNEL_DATA, 7))
    transport._send_message(message(MSG_CHANNEL_CLOSE, 7))
    # built before the close, sent after it: dropped, as is a second CLOSE
    transport._send_message(message(MSG_CHANNEL_DATA, 7))
    transport._send_message(message(MSG_CHANNEL_WINDOW_ADJUST, 7))
    transport._send_message(message(MSG_CHANNEL_CLOSE, 7))
    # other channels and connection-level messages are untouched
    transport._send_message(message(MSG_CHANNEL_DATA, 8))
    transport._send_message(message(MSG_IGNORE))
    assert sent == [
        (MSG_CHANNEL_DATA, 7),
        (MSG_CHANNEL_CLOSE, 7),
        (MSG_CHANNEL_DATA, 8),
        (MSG_IGNORE, None),
    ]


def test_a_channel_number_the_server_reuses_is_sent_to_again(
    wire: tuple[ChannelSafeTransport, list[tuple[int, int | None]]],
) -> None:
    transport, sent = wire
    transport._send_message(message(MSG_CHANNEL_CLOSE, 7))
    local = transport._next_channel()
    transport._channels.put(local, paramiko.Channel(local))
    confirmation = paramiko.Message()
    for value in (local, 7, 2 << 20, 32768):  # our channel, the server's (7 again), window, max
        confirmation.add_int(value)
    transport._parse_channel_open_success(paramiko.Message(confirmation.asbytes()))
    transport._send_message(message(MSG_CHANNEL_DATA, 7))
    assert sent == [(MSG_CHANNEL_CLOSE, 7), (MSG_CHANNEL_DATA, 7)]


def host(**changes: object) -> ResolvedHost:
    base = ResolvedHost(
        alias="bastion",
        hostname="10.0.0.1",
        port=22,
        user="ops",
        identity_files=("~/.ssh/id_ed25519",),
        sources=(("hostname", "~/.ssh/config:2"),),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_hop_is_identified_by_the_connection_it_makes_not_by_its_name() -> None:
    assert hop_key(host()) == hop_key(host(alias="10.0.0.1", sources=()))
    for change in (
        {"hostname": "10.0.0.2"},
        {"port": 2222},
        {"user": "root"},
        {"identity_files": ("~/.ssh/other",)},
        {"host_key_alias": "bastion-key"},
        {"proxy_command": "nc -X 5 %h %p"},
    ):
        assert hop_key(host(**change)) != hop_key(host()), change
