"""The webhook channel's request, without a network: the body, the headers, the signature.

The signature is checked with the ``verify()`` that docs/notify-webhook.md gives receivers (and
with the documented openssl line), not with the channel's own code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from http_channel_helpers import T0, alert, channel, documented_verify, notification

from ugro_health.notify.base import DeliveryError, public_json
from ugro_health.notify.webhook import WebhookChannel, encode, signature

URL = "https://hooks.example.com/ugro/T0KEN-IN-PATH?key=QUERYSECRET"


def _strict(body: bytes) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(body.decode("utf-8"), parse_constant=refuse)


def test_the_body_is_the_public_v1_document_as_compact_utf8() -> None:
    note = notification(alert(), alert("gpu2", state="resolved", ends_at=T0 + 60, gpu=None))
    body = encode(note)
    assert _strict(body) == public_json(note)
    doc = json.loads(body)
    assert doc["schema"] == "ugro-health/notification/v1"
    assert "_t" not in doc and all("_t" not in a for a in doc["alerts"])
    assert "°C".encode() in body  # UTF-8, not \u escapes
    assert body.startswith(b'{"schema":"ugro-health/notification/v1","id":')


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_value_is_sent_as_null(value: float) -> None:
    doc = _strict(encode(notification(alert(value=value))))
    assert isinstance(doc, dict)
    assert doc["alerts"][0]["value"] is None


def test_the_signature_verifies_with_the_documented_procedure() -> None:
    verify = documented_verify()
    hook = WebhookChannel(
        channel(name="h", type="webhook", url=URL, secret="s3cret"), clock=lambda: T0 + 0.9
    )
    body = encode(notification())
    headers = hook.headers(body)
    stamp, sig = headers["X-Ugro-Timestamp"], headers["X-Ugro-Signature"]
    assert stamp == str(int(T0))
    assert sig.startswith("sha256=") and len(sig) == len("sha256=") + 64
    assert verify(b"s3cret", stamp, sig, body, now=T0 + 1)
    assert not verify(b"wrong", stamp, sig, body, now=T0 + 1)
    assert not verify(b"s3cret", stamp, sig, body.replace(b"91", b"19"), now=T0 + 1)
    assert not verify(b"s3cret", str(int(T0) + 1), sig, body, now=T0 + 1)  # timestamp is signed
    assert not verify(b"s3cret", stamp, sig, body, now=T0 + 301)  # a replay, too late
    assert verify(b"s3cret", stamp, sig, body, now=T0 + 299)


def test_the_documented_openssl_line_gives_the_same_digest(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    body = encode(notification())
    (tmp_path / "body.json").write_bytes(body)
    out = subprocess.run(
        [
            "sh",
            "-c",
            '{ printf \'%s.\' "$TS"; cat body.json; } | openssl dgst -sha256 -hmac "$SECRET"',
        ],
        cwd=tmp_path,
        env={"TS": "1796302920", "SECRET": "s3cret", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip().endswith(signature("s3cret", 1796302920, body)[len("sha256=") :])


def test_headers_without_a_secret_carry_no_signature() -> None:
    hook = WebhookChannel(channel(name="h", type="webhook", url=URL, headers={"X-Team": "gpu-ops"}))
    headers = hook.headers(b"{}")
    assert headers == {
        "User-Agent": "ugro-health/0.1.0",
        "X-Team": "gpu-ops",
        "Content-Type": "application/json",
    }


def test_a_configured_user_agent_replaces_ours() -> None:
    hook = WebhookChannel(
        channel(name="h", type="webhook", url=URL, headers={"user-agent": "mine/1"})
    )
    headers = hook.headers(b"{}")
    assert headers["user-agent"] == "mine/1" and "User-Agent" not in headers


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("Content-Type", "text/plain", "set by the channel"),
        ("X-Ugro-Signature", "sha256=00", "set by the channel"),
        ("Authorization", "Bearer T0KEN\r\nX-Evil: 1", "control character"),
        ("Bad Name", "T0KEN", "not a valid HTTP header name"),
        ("Authorization", "Bearer T0KEN\u2028", "Latin-1"),
    ],
)
def test_a_bad_configured_header_fails_without_quoting_its_value(
    name: str, value: str, why: str
) -> None:
    hook = WebhookChannel(channel(name="h", type="webhook", url=URL, headers={name: value}))
    with pytest.raises(DeliveryError) as caught:
        hook.send(notification(), timeout=1)
    assert why in str(caught.value) and caught.value.permanent
    assert "T0KEN" not in str(caught.value) and "\n" not in str(caught.value)


def test_an_unset_secret_is_a_retryable_error_naming_its_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("UGRO_TEST_HOOK_SECRET", raising=False)
    hook = WebhookChannel(
        channel(name="h", type="webhook", url=URL, secret={"env": "UGRO_TEST_HOOK_SECRET"})
    )
    with pytest.raises(DeliveryError) as caught:
        hook.send(notification(), timeout=1)
    assert str(caught.value) == (
        "channel h: secret not available: environment variable UGRO_TEST_HOOK_SECRET is not set"
    )
    assert not caught.value.permanent


def test_an_empty_secret_file_is_refused_rather_than_signing_with_no_key(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("\n")
    hook = WebhookChannel(
        channel(name="h", type="webhook", url=URL, secret={"file": str(tmp_path / "secret")})
    )
    with pytest.raises(DeliveryError, match="is empty"):
        hook.send(notification(), timeout=1)


@pytest.mark.parametrize("url", ["http://h:99x/T0KEN-IN-PATH", "http://h/T0KEN-IN-PATH\n"])
def test_an_unusable_url_fails_in_one_line_without_quoting_it(url: str) -> None:
    hook = WebhookChannel(channel(name="h", type="webhook", url="http://h/"))
    hook._url = url  # what the parser's scheme check does not see
    with pytest.raises(DeliveryError) as caught:
        hook.send(notification(), timeout=1)
    assert "T0KEN" not in str(caught.value) and "\n" not in str(caught.value)


def test_repr_shows_neither_url_nor_secret() -> None:
    hook = WebhookChannel(channel(name="h", type="webhook", url=URL, secret="s3cret"))
    assert repr(hook) == "WebhookChannel(name='h')"
