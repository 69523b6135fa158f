"""Every English string the UI says has its Simplified Chinese, with the same placeholders."""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.pofile import read_po

from web.i18n import CATALOGUES, Translator, best_locale, catalogue

WEB = Path(__file__).resolve().parents[2] / "web"
# _("...") in templates and code, gettext("...") in code; both quote styles.
SAID = re.compile(r"""(?:\b_|gettext)\(\s*(?P<q>["'])(?P<text>(?:(?!(?P=q)).)+)(?P=q)""")
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def said_in_the_ui() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in [*WEB.rglob("*.html"), *WEB.rglob("*.py"), *WEB.rglob("*.js")]:
        for match in SAID.finditer(path.read_text(encoding="utf-8")):
            found.setdefault(match.group("text"), str(path.relative_to(WEB)))
    return found


def test_every_ui_string_has_a_chinese_translation_with_the_same_placeholders() -> None:
    chinese = catalogue("zh_CN")
    said = said_in_the_ui()
    assert len(said) > 20  # the scan finds the UI's words at all
    missing = {text: where for text, where in said.items() if text not in chinese}
    assert missing == {}, "add these to web/locale/zh_CN.po"
    for text in said:
        assert set(PLACEHOLDER.findall(chinese[text])) == set(PLACEHOLDER.findall(text)), text


def test_the_catalogue_reads_cleanly_without_duplicates() -> None:
    raw = (CATALOGUES / "zh_CN.po").read_text(encoding="utf-8")
    ids = re.findall(r'^msgid "(.+)"$', raw, flags=re.MULTILINE)
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    with (CATALOGUES / "zh_CN.po").open("rb") as po:
        assert len(read_po(po)) == len(ids)


def test_formats_follow_the_locale_and_time_zone() -> None:
    import datetime as dt
    from decimal import Decimal

    midnight_utc = dt.datetime(2026, 11, 23, 16, 30, tzinfo=dt.UTC)  # 00:30 next day in Shanghai
    zh, en = Translator("zh_CN", "Asia/Shanghai"), Translator("en", "Europe/London")
    assert zh.date(midnight_utc) == "2026年11月24日"
    assert en.date(midnight_utc) == "Nov 23, 2026"
    assert zh.money(Decimal("12345.5"), "CNY") == "¥12,345.50"
    assert zh.gettext("Leads") == "线索" and en.gettext("Leads") == "Leads"
    assert best_locale(None, "zh-CN,zh;q=0.9,en;q=0.8") == "zh_CN"
    assert best_locale(None, "fr-FR") == "en" and best_locale("zh_CN") == "zh_CN"
