from __future__ import annotations

import re

from bridge.i18n import LOCALES, catalogue, t


def test_every_entry_has_every_locale_with_the_same_placeholders() -> None:
    for key, entry in catalogue().items():
        assert set(entry) == set(LOCALES), key
        fields = {loc: set(re.findall(r"{(\w+)}", text)) for loc, text in entry.items()}
        assert fields["zh-CN"] == fields["en"], key


def test_platform_terms_keep_their_feige_names() -> None:
    assert "服务单" in t("en", "chat.reminder", mention="@a", seconds=30, deadline="10:00:00")
    assert "service ticket" in t("zh-CN", "chat.reminder", mention="@a", seconds=30, deadline="10:00:00")


def test_unknown_locale_falls_back_to_chinese() -> None:
    assert t("fr", "order.view") == t("zh-CN", "order.view") == "查看详情"
