"""A8: what platform CS reads of an agent's Slack message (connectors/slack/text.py)."""

from __future__ import annotations

import pytest

from connectors.slack.text import slack_to_platform_text

CASES = [
    # Slack's picker writes its own names: hyphenated ones, and words of its own.
    (":woman-raising-hand: :man-bowing: :flag-cn:", "🙋‍♀️ 🙇‍♂️ 🇨🇳"),
    (":large_green_circle: :shopping_trolley: :smiling_face_with_3_hearts:", "🟢 🛒 🥰"),
    (":+1::skin-tone-3: :wave::skin-tone-5: :man-woman-girl-boy:", "👍🏼 👋🏾 👨‍👩‍👧‍👦"),
    (":thumbsup: :truck: :white_check_mark:", "👍 🚚 ✅"),
    (":partyparrot: 12:30:45", ":partyparrot: 12:30:45"),  # a custom emoji and a time stay as written
    # What someone typed and Slack only linked reads as typed; a link with its own words shows both.
    ("<http://sf-express.com|sf-express.com> <mailto:kf@shop.cn|kf@shop.cn>", "sf-express.com kf@shop.cn"),
    ("<https://sf-express.com/track?n=1>", "https://sf-express.com/track?n=1"),
    ("<https://sf-express.com/t/1|查询物流>", "查询物流 (https://sf-express.com/t/1)"),
    # Mentions by what people see: a name, a #channel, @here, a group's handle, a date's text.
    ("<@U0AGENTA> <@U0NOBODY> <#C0CHATS1001|售后>", "@Agent A @U0NOBODY #售后"),
    ("<!here> <!subteam^S0CS|@cs-team> <!date^1392734382^{date_short}|Feb 18, 2014>", "@here @cs-team Feb 18, 2014"),
    ("&lt;顺丰&gt; &amp; 5 &gt; 3", "<顺丰> & 5 > 3"),
]


@pytest.mark.parametrize(("written", "read"), CASES)
def test_what_platform_cs_reads(written: str, read: str) -> None:
    assert slack_to_platform_text(written, {"U0AGENTA": "Agent A"}) == read
