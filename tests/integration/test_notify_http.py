"""The webhook and Slack channels against a real HTTP(S) server on loopback (``HttpReceiver``).

What each answer of a receiver becomes: delivered, a retryable ``DeliveryError`` (500, 429 with
its ``Retry-After``, a hang, a refused connection), or a permanent one (404, a redirect); TLS is
verified (a self-signed receiver is refused unless its certificate is given as ``ca_file``).
The channel sends once and never retries: the receiver counts every request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_channel_helpers import alert, channel, documented_verify, notification
from http_receiver import HttpReceiver, Reply, TlsFiles, self_signed

from ugro_health.notify.base import DeliveryError, public_json
from ugro_health.notify.slack import MAX_BLOCKS, SlackChannel
from ugro_health.notify.webhook import WebhookChannel

SLACK_PATH = "/services/T0AAAAAAA/B0BBBBBBB/XXXXslacksecretXXXXXXXX"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as server:
        yield server


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return self_signed(tmp_path_factory.mktemp("tls"))


def _webhook(url: str, **keys: object) -> WebhookChannel:
    return WebhookChannel(channel(name="hook", type="webhook", url=url, **keys))


def _slack(monkeypatch: pytest.MonkeyPatch, url: str, **keys: object) -> SlackChannel:
    monkeypatch.setenv("UGRO_TEST_SLACK_URL", url)
    return SlackChannel(
        channel(name="chat", type="slack", url={"env": "UGRO_TEST_SLACK_URL"}, **keys)
    )


def _refused(send: object, receiver: HttpReceiver | None = None) -> DeliveryError:
    assert callable(send)
    with pytest.raises(DeliveryError) as caught:
        send(notification(), timeout=5)
    error = caught.value
    assert "\n" not in str(error)
    if receiver is not None:
        assert f"{receiver.host}:{receiver.port}" in str(error)
    return error


# --- webhook ---------------------------------------------------------------------------------


def test_webhook_posts_the_v1_document_signed(receiver: HttpReceiver) -> None:
    hook = _webhook(receiver.url("/ugro?team=gpu"), secret="s3cret", headers={"X-Team": "ops"})
    note = notification(alert(), alert("gpu2", state="resolved", ends_at=1796302980.0))
    before = time.time()
    hook.send(note, timeout=10)
    (got,) = receiver.received
    assert (got.method, got.path, got.status) == ("POST", "/ugro?team=gpu", 200)
    assert got.json() == public_json(note)
    assert got.header("Content-Type") == "application/json"
    assert got.header("User-Agent") == "ugro-health/0.1.0"
    assert got.header("X-Team") == "ops"
    stamp, sig = got.header("X-Ugro-Timestamp"), got.header("X-Ugro-Signature")
    assert stamp is not None and sig is not None
    assert before - 1 <= int(stamp) <= time.time()
    verify = documented_verify()
    assert verify(b"s3cret", stamp, sig, got.body)
    assert not verify(b"s3cret-wrong", stamp, sig, got.body)


def test_webhook_without_a_secret_is_unsigned(receiver: HttpReceiver) -> None:
    _webhook(receiver.url("/")).send(notification(), timeout=10)
    (got,) = receiver.received
    assert got.header("X-Ugro-Signature") is None and got.header("X-Ugro-Timestamp") is None


def test_500_is_retryable(receiver: HttpReceiver) -> None:
    receiver.reply(Reply(500, body=b"database on fire"))
    error = _refused(_webhook(receiver.url("/path-not-in-errors")).send, receiver)
    assert str(error) == f"HTTP 500 from 127.0.0.1:{receiver.port}: database on fire"
    assert not error.permanent and error.retry_after is None
    assert len(receiver.received) == 1  # sent once: retries are the outbox's


def test_429_carries_its_retry_after(receiver: HttpReceiver) -> None:
    receiver.script(
        Reply(429, headers={"Retry-After": "7"}),
        Reply(503, headers={"Retry-After": "Thu, 01 Jan 2099 00:00:00 GMT"}),
    )
    hook = _webhook(receiver.url("/"))
    error = _refused(hook.send, receiver)
    assert error.retry_after == 7.0 and not error.permanent
    error = _refused(hook.send, receiver)
    assert error.retry_after is not None and error.retry_after > 86400 and not error.permanent
    hook.send(notification(), timeout=5)  # the script is spent: 200 again
    assert [r.status for r in receiver.received] == [429, 503, 200]


def test_a_token_in_the_webhook_url_never_appears_in_an_error(receiver: HttpReceiver) -> None:
    path = "/hooks/XXXXpathTOKENXXXX?token=XXXXqueryTOKENXXXX"
    receiver.reply(Reply(404, body=f"no route for POST {path}".encode()))
    error = _refused(_webhook(receiver.url(path)).send, receiver)
    assert "TOKEN" not in str(error) and error.permanent
    assert str(error).startswith(f"HTTP 404 from 127.0.0.1:{receiver.port}: no route for POST ")


@pytest.mark.parametrize("status", [400, 401, 404, 410])
def test_other_4xx_are_permanent(receiver: HttpReceiver, status: int) -> None:
    receiver.reply(Reply(status, body=b"no_service"))
    error = _refused(_webhook(receiver.url("/")).send, receiver)
    assert error.permanent and str(error).startswith(f"HTTP {status} from ")


def test_a_redirect_is_not_followed(receiver: HttpReceiver) -> None:
    receiver.reply(Reply(302, headers={"Location": receiver.url("/elsewhere")}))
    error = _refused(_webhook(receiver.url("/")).send, receiver)
    assert error.permanent
    assert [r.path for r in receiver.received] == ["/"]


def test_a_hanging_receiver_fails_within_the_timeout(receiver: HttpReceiver) -> None:
    receiver.reply(Reply(hang=True))
    hook = _webhook(receiver.url("/"))
    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        hook.send(notification(), timeout=1.0)
    elapsed = time.monotonic() - started
    assert str(caught.value) == f"127.0.0.1:{receiver.port} did not answer within 1s"
    assert not caught.value.permanent
    assert elapsed < 20  # bounded by the timeout (generous: a loaded CI machine)
    assert len(receiver.received) == 1 and receiver.received[0].status is None


def test_the_channel_timeout_caps_the_callers(receiver: HttpReceiver) -> None:
    receiver.reply(Reply(hang=True))
    hook = _webhook(receiver.url("/"), timeout=0.5)
    with pytest.raises(DeliveryError, match=r"did not answer within 0\.5s"):
        hook.send(notification(), timeout=60)


def test_a_receiver_that_is_down_is_retryable_then_delivered(receiver: HttpReceiver) -> None:
    hook = _webhook(receiver.url("/"))
    receiver.down()
    error = _refused(hook.send, receiver)
    assert str(error) == f"127.0.0.1:{receiver.port} not reached: Connection refused"
    assert not error.permanent
    receiver.up()
    hook.send(notification(), timeout=5)
    assert [r.status for r in receiver.delivered()] == [200]


# --- TLS -------------------------------------------------------------------------------------


def test_a_self_signed_receiver_is_refused_by_default(tls_files: TlsFiles) -> None:
    with HttpReceiver(tls=tls_files) as receiver:
        error = _refused(_webhook(receiver.url("/")).send, receiver)
        assert str(error).startswith(f"TLS certificate of 127.0.0.1:{receiver.port} not trusted:")
        assert not receiver.received
        deadline = time.monotonic() + 20
        while receiver.tls_failures == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receiver.tls_failures >= 1  # the server saw the client abort the handshake


def test_ca_file_trusts_a_self_signed_receiver(tls_files: TlsFiles) -> None:
    with HttpReceiver(tls=tls_files) as receiver:
        _webhook(receiver.url("/"), ca_file=str(tls_files.cert)).send(notification(), timeout=5)
        assert [r.status for r in receiver.delivered()] == [200]


def test_ca_file_does_not_excuse_a_wrong_host_name(tls_files: TlsFiles) -> None:
    # the certificate names 127.0.0.1 and localhost, not 127.0.0.2 (still loopback)
    with HttpReceiver(tls=tls_files, host="127.0.0.2") as receiver:
        error = _refused(_webhook(receiver.url("/"), ca_file=str(tls_files.cert)).send, receiver)
        assert str(error).startswith(f"TLS certificate of 127.0.0.2:{receiver.port} not trusted:")
        assert "mismatch" in str(error)


def test_tls_verify_false_accepts_any_certificate(tls_files: TlsFiles) -> None:
    with HttpReceiver(tls=tls_files) as receiver:
        _webhook(receiver.url("/"), tls_verify=False).send(notification(), timeout=5)
        assert len(receiver.delivered()) == 1


# --- Slack -----------------------------------------------------------------------------------


def test_slack_posts_text_and_blocks(
    receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = _slack(monkeypatch, receiver.url(SLACK_PATH))
    alerts = tuple(alert(f"gpu{i:03d}") for i in range(120))
    chat.send(notification(*alerts), timeout=5)
    (got,) = receiver.received
    assert got.path == SLACK_PATH and got.header("Content-Type") == "application/json"
    message = got.json()
    assert (
        message["text"]
        == "CRITICAL 120 alerts on 120 node(s): gpu000, gpu001, gpu002, gpu003, gpu004 and 115 more"
    )
    assert len(message["blocks"]) == MAX_BLOCKS
    assert message["blocks"][-1]["elements"][0]["text"].startswith("…and 73 more alert(s)")


def test_slack_429_carries_its_retry_after(
    receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver.reply(Reply(429, body=b"rate_limited", headers={"Retry-After": "30"}))
    error = _refused(_slack(monkeypatch, receiver.url(SLACK_PATH)).send, receiver)
    assert error.retry_after == 30.0 and not error.permanent


def test_slack_url_never_appears_in_an_error(
    receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a receiver's error page that echoes the request line
    receiver.reply(Reply(500, body=f"no route for POST {SLACK_PATH}".encode()))
    chat = _slack(monkeypatch, receiver.url(SLACK_PATH))
    error = _refused(chat.send, receiver)
    assert "slacksecret" not in str(error) and "T0AAAAAAA" not in str(error)
    assert str(error).startswith(f"HTTP 500 from 127.0.0.1:{receiver.port}: no route for POST ")
    assert not error.permanent
    receiver.reply(Reply(404, body=b"no_service"))
    error = _refused(chat.send, receiver)
    assert error.permanent and "slacksecret" not in str(error)
    receiver.down()
    error = _refused(chat.send, receiver)
    assert "slacksecret" not in str(error) and not error.permanent
    assert "slacksecret" not in repr(chat)


def test_slack_hang_and_tls(tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    with HttpReceiver(tls=tls_files) as receiver:
        chat = _slack(monkeypatch, receiver.url(SLACK_PATH))
        error = _refused(chat.send, receiver)
        assert "not trusted" in str(error) and "slacksecret" not in str(error)
        chat = _slack(monkeypatch, receiver.url(SLACK_PATH), ca_file=str(tls_files.cert))
        receiver.reply(Reply(hang=True))
        with pytest.raises(DeliveryError, match="did not answer within 1s"):
            chat.send(notification(), timeout=1)
        receiver.reply(Reply(200))
        chat.send(notification(), timeout=5)
        assert len(receiver.delivered()) == 1


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (None, "environment variable UGRO_TEST_SLACK_URL is not set"),
        ("hooks.slack.com" + SLACK_PATH, "is not an http:// or https:// URL"),
        ("https://hooks.slack.com" + SLACK_PATH + "\n", "contains spaces or control characters"),
    ],
)
def test_a_bad_slack_url_fails_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, value: str | None, why: str
) -> None:
    chat = _slack(monkeypatch, "http://127.0.0.1:9/")
    if value is None:
        monkeypatch.delenv("UGRO_TEST_SLACK_URL")
    else:
        monkeypatch.setenv("UGRO_TEST_SLACK_URL", value)
    error = _refused(chat.send)
    assert why in str(error) and "slacksecret" not in str(error) and not error.permanent


def test_slack_url_from_a_file(receiver: HttpReceiver, tmp_path: Path) -> None:
    (tmp_path / "slack-url").write_text(receiver.url(SLACK_PATH) + "\n")
    chat = SlackChannel(
        channel(name="chat", type="slack", url={"file": str(tmp_path / "slack-url")})
    )
    chat.send(notification(), timeout=5)
    assert [r.path for r in receiver.delivered()] == [SLACK_PATH]


@pytest.mark.slow
def test_a_dripping_receiver_cannot_hold_a_send_past_its_timeout(receiver: HttpReceiver) -> None:
    receiver.reply(Reply(200, drip_s=0.05))  # ~60 bytes: about 3 s in all, 0.05 s per byte
    with pytest.raises(DeliveryError, match="within"):
        _webhook(receiver.url("/")).send(notification(), timeout=0.5)
