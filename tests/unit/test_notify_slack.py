"""The Slack channel's message, without a network: what a person reads, and Slack's limits.

Slack refuses (HTTP 400, for good) a message over its limits: 50 blocks, 150 characters in a
header, 3,000 in a section; and ``msg_blocks_too_long`` above about 13,000 in all.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from http_channel_helpers import T0, alert, notification

from ugro_health.notify.base import AlertNotice
from ugro_health.notify.slack import (
    MAX_BLOCKS,
    MAX_BLOCKS_CHARS,
    MAX_HEADER,
    MAX_SECTION,
    MAX_TEXT,
    cut,
    payload,
)
from ugro_health.notify.webhook import scrub


def _texts(message: dict[str, Any]) -> list[str]:
    out = []
    for block in message["blocks"]:
        items = block.get("elements") or [block["text"]]
        out += [item["text"] for item in items]
    return out


def _within_limits(message: dict[str, Any]) -> None:
    json.dumps(message, allow_nan=False)
    blocks = message["blocks"]
    assert 1 <= len(blocks) <= MAX_BLOCKS
    assert blocks[0]["type"] == "header" and blocks[0]["text"]["type"] == "plain_text"
    assert 0 < len(blocks[0]["text"]["text"]) <= MAX_HEADER
    for block in blocks:
        assert block["type"] in ("header", "section", "context")
        if block["type"] == "section":
            assert block["text"]["type"] == "mrkdwn"
            assert 0 < len(block["text"]["text"]) <= MAX_SECTION
        if block["type"] == "context":
            assert 1 <= len(block["elements"]) <= 10
    assert sum(len(text) for text in _texts(message)) <= MAX_BLOCKS_CHARS
    assert 0 < len(message["text"]) <= MAX_TEXT


def test_one_alert_reads_as_severity_node_state_message_and_code() -> None:
    message = payload(notification(alert()))
    _within_limits(message)
    assert message["text"] == "CRITICAL gpu1: GPU 0 temperature 91 °C"
    header, context, section = message["blocks"]
    assert header["text"]["text"] == "CRITICAL gpu1: GPU 0 temperature 91 °C"
    assert context["elements"][0]["text"].startswith("cluster *prod* · 1 alert · <!date^")
    assert section["text"]["text"] == (
        ":red_circle: *CRITICAL* · *gpu1* GPU 0 · firing\n"
        "since <!date^1796302920^{date_short_pretty} {time_secs}|2026-12-03T13:02:00Z>"
        " · value 91.0\n"
        "GPU 0 temperature 91 °C (`gpu_temp_critical`)"
    )


def test_a_resolved_alert_is_shown_as_resolved_with_its_times() -> None:
    gone = alert(severity="warning", state="resolved", ends_at=T0 + 60, gpu=None, value=None)
    message = payload(notification(gone))
    _within_limits(message)
    assert message["text"].startswith("RESOLVED gpu1: ")
    text = message["blocks"][2]["text"]["text"]
    assert text.startswith(":white_check_mark: *RESOLVED* · *gpu1* · was warning\n")
    assert "resolved <!date^1796302980^" in text and "FIRING" not in text.upper()


@pytest.mark.parametrize(
    ("fields", "shown"),
    [
        ({"state": "flapping"}, ":warning: *CRITICAL* · *gpu1* GPU 0 · flapping"),
        ({"repeat": True}, ":red_circle: *CRITICAL* · *gpu1* GPU 0 · still firing"),
        (
            {"severity": "warning", "gpu": None, "subject": "/data"},
            ":large_orange_circle: *WARNING* · *gpu1* `/data` · firing",
        ),
    ],
)
def test_flapping_repeats_and_subjects(fields: dict[str, Any], shown: str) -> None:
    message = payload(notification(alert(**fields)))
    assert message["blocks"][2]["text"]["text"].startswith(shown + "\n")


def test_text_from_nodes_cannot_mention_channel_or_forge_links() -> None:
    bad = alert(message="<!channel> see <https://evil.example|docs> & more", subject="<@U1>")
    message = payload(notification(bad, cluster="<!here>"))
    # The header is plain_text, which Slack never parses for mentions or links: it stays as is.
    assert message["blocks"][0]["text"] == {
        "type": "plain_text",
        "text": "CRITICAL gpu1: <!channel> see <https://evil.example|docs> & more",
        "emoji": True,
    }
    parsed = json.dumps([message["text"], message["blocks"][1:]])
    for forged in ("<!channel>", "<https://evil", "<@U1>", "<!here>"):
        assert forged not in parsed
    section = message["blocks"][2]["text"]["text"]
    assert "&lt;!channel&gt; see &lt;https://evil.example|docs&gt; &amp; more" in section
    assert message["text"].startswith("CRITICAL gpu1: &lt;!channel&gt;")


def test_critical_and_firing_alerts_come_first() -> None:
    alerts = (
        alert("a", severity="warning", state="resolved", ends_at=T0 + 1),
        alert("b", severity="warning"),
        alert("c", severity="critical", state="resolved", ends_at=T0 + 1),
        alert("d", severity="critical"),
    )
    sections = [b["text"]["text"] for b in payload(notification(*alerts))["blocks"][2:]]
    assert [s.split("*")[3] for s in sections] == ["d", "b", "c", "a"]


@pytest.mark.parametrize(("count", "shown"), [(48, 48), (49, 47), (200, 47)])
def test_at_most_50_blocks_and_a_count_of_the_alerts_left_out(count: int, shown: int) -> None:
    alerts = tuple(alert(f"gpu{i:03d}", message="GPU 0 temperature 91 °C") for i in range(count))
    message = payload(notification(*alerts))
    _within_limits(message)
    sections = [b for b in message["blocks"] if b["type"] == "section"]
    assert len(sections) == shown
    last = message["blocks"][-1]
    if shown == count:
        assert len(message["blocks"]) == count + 2 and last["type"] == "section"
    else:
        assert len(message["blocks"]) == MAX_BLOCKS
        assert last["elements"][0]["text"] == (
            f"…and {count - shown} more alert(s) not shown ({count} in all, Slack's limits)"
        )


def test_long_messages_are_cut_to_the_section_and_total_limits() -> None:
    alerts = tuple(alert(f"n{i}", message="x" * 10_000 + "END") for i in range(8))
    message = payload(notification(*alerts))
    _within_limits(message)
    sections = [b["text"]["text"] for b in message["blocks"] if b["type"] == "section"]
    assert 1 <= len(sections) < 8
    assert all(len(s) == MAX_SECTION and "END" not in s for s in sections)
    assert all(s.endswith("… (`gpu_temp_critical`)") for s in sections)
    left = 8 - len(sections)
    assert message["blocks"][-1]["elements"][0]["text"].startswith(f"…and {left} more")


def test_a_long_summary_is_cut_for_the_header_and_the_text() -> None:
    message = payload(notification(alert(message="y" * 50_000), cluster="c" * 1000))
    _within_limits(message)
    assert message["blocks"][0]["text"]["text"].endswith("…")
    assert message["text"].endswith("…") and len(message["text"]) == MAX_TEXT


def test_cutting_never_leaves_half_an_entity() -> None:
    assert cut("&amp;&amp;&amp;", 8) == "&amp;…"
    assert cut("ab&lt;", 5) == "ab…"
    assert cut("short", 5) == "short"


def test_a_test_notification_says_the_channel_works() -> None:
    message = payload(notification(test=True, alerts=()))
    _within_limits(message)
    assert message["text"] == "test notification from ugro-health"
    assert "this channel works" in message["blocks"][2]["text"]["text"]
    assert message["blocks"][1]["elements"][0]["text"].endswith(" · test")


def test_scrub_removes_the_url_and_its_parts() -> None:
    url = "https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/XXXXsecretXXXXXXXX"
    said = f"HTTP 500 from hooks.slack.com:443: no route for POST {url[23:]} (XXXXsecretXXXXXXXX)"
    clean = scrub(said, url)
    assert "secret" not in clean and "T0AAAAAAA" not in clean
    assert clean.startswith("HTTP 500 from hooks.slack.com:443: no route for POST ")


def test_alerts_are_a_tuple_of_notices() -> None:
    # the payload takes whatever order the lifecycle gave and sorts a copy
    alerts = (alert("b", severity="warning"), alert("a"))
    note = notification(*alerts)
    payload(note)
    assert note.alerts == alerts and isinstance(note.alerts[0], AlertNotice)
