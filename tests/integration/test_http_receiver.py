"""The test receiver itself (``http_receiver.HttpReceiver``), with plain urllib as the client:
the outbox and channel tests rely on it to answer, hang and go down as told."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest
from http_receiver import HttpReceiver, Reply


def _post(url: str, body: bytes = b"{}", timeout: float = 10) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_script_then_default_and_everything_recorded() -> None:
    with HttpReceiver() as receiver:
        receiver.script(Reply(500), Reply(429, headers={"Retry-After": "3"}))
        statuses = [_post(receiver.url("/a"), b"1"), _post(receiver.url("/b"), b"2")]
        statuses.append(_post(receiver.url("/c"), b"3"))
        assert statuses == [500, 429, 200]
        got = receiver.wait_for(3)
        assert [(r.path, r.body, r.status) for r in got] == [
            ("/a", b"1", 500),
            ("/b", b"2", 429),
            ("/c", b"3", 200),
        ]
        assert [r.path for r in receiver.delivered()] == ["/c"]


def test_a_hung_request_ends_when_released() -> None:
    with HttpReceiver() as receiver:
        receiver.reply(Reply(hang=True))
        outcome: list[object] = []

        def client() -> None:
            try:
                outcome.append(_post(receiver.url("/"), timeout=60))
            except OSError as exc:  # closed without an answer
                outcome.append(exc)

        thread = threading.Thread(target=client)
        thread.start()
        (hung,) = receiver.wait_for(1)
        assert hung.status is None and thread.is_alive()
        receiver.release()
        thread.join(timeout=30)
        assert not thread.is_alive() and outcome and not isinstance(outcome[0], int)


def test_down_refuses_and_up_listens_again_on_the_same_port() -> None:
    with HttpReceiver() as receiver:
        port = receiver.port
        receiver.down()
        with pytest.raises(urllib.error.URLError, match="refused"):
            _post(receiver.url("/"))
        receiver.up()
        assert receiver.port == port and _post(receiver.url("/")) == 200


def test_wait_for_says_how_many_came() -> None:
    with HttpReceiver() as receiver, pytest.raises(AssertionError, match="0 request"):
        receiver.wait_for(1, timeout=0.2)


def test_only_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        HttpReceiver(host="0.0.0.0")
