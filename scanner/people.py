"""Who a mail is from and about: names, companies, and new leads from unknown senders."""

from __future__ import annotations

import re

FREE_MAIL_DOMAINS = frozenset(
    {
        "qq.com", "vip.qq.com", "foxmail.com", "163.com", "126.com", "yeah.net", "vip.163.com",
        "vip.126.com", "188.com", "sina.com", "sina.cn", "vip.sina.com", "sohu.com", "139.com",
        "189.cn", "wo.cn", "aliyun.com", "tom.com", "21cn.com", "gmail.com", "googlemail.com",
        "outlook.com", "hotmail.com", "live.com", "msn.com", "yahoo.com", "yahoo.com.cn",
        "yahoo.co.jp", "icloud.com", "me.com", "mac.com", "aol.com", "gmx.com", "gmx.de",
        "web.de", "mail.ru", "yandex.ru", "proton.me", "protonmail.com", "zoho.com", "hey.com",
        "naver.com", "daum.net", "hanmail.net",
    }
)  # fmt: skip
NO_REPLY = re.compile(
    r"^(no-?reply|do-?not-?reply|donotreply|noreply-\w+|wordpress|forms?|webform|notifications?|"
    r"mailer|bounce|system|admin|info-noreply)$",
    re.IGNORECASE,
)
_CJK = re.compile(r"[\u3400-\u9fff]")
# Two-character Chinese family names; the rest take the first character.
COMPOUND_SURNAMES = frozenset(
    {
        "欧阳",
        "司马",
        "诸葛",
        "上官",
        "东方",
        "皇甫",
        "尉迟",
        "公孙",
        "慕容",
        "长孙",
        "宇文",
        "司徒",
        "令狐",
        "夏侯",
    }
)


def is_no_reply(address: str | None) -> bool:
    return bool(address) and bool(NO_REPLY.match((address or "").partition("@")[0]))


def split_name(display: str | None, address: str | None) -> tuple[str, str]:
    """(first name, last name) from a display name, else from the address's local part."""
    name = (display or "").strip().strip("\"'")
    if not name or "@" in name:
        local = (address or "").partition("@")[0]
        parts = [p for p in re.split(r"[._\-+]", local) if p and not p.isdigit()]
        name = " ".join(p.capitalize() for p in parts[:2])
    if _CJK.search(name) and " " not in name:
        family = name[:2] if name[:2] in COMPOUND_SURNAMES else name[:1]
        return name[len(family) :], family
    if "," in name:  # "Last, First"
        last, _, first = name.partition(",")
        return first.strip(), last.strip()
    first, _, last = name.rpartition(" ")
    return (first, last) if first else ("", last)


def company_from_domain(address: str | None) -> str | None:
    """A company name guess from the domain, unless it is a free-mail provider."""
    domain = (address or "").rpartition("@")[2].lower()
    if not domain or domain in FREE_MAIL_DOMAINS:
        return None
    labels = domain.split(".")
    # example.com.cn -> example; mail.example.co.uk -> example
    while len(labels) > 1 and labels[-1] in {
        "com",
        "net",
        "org",
        "cn",
        "co",
        "uk",
        "hk",
        "tw",
        "jp",
        "de",
        "gov",
        "edu",
        "ac",
    }:
        labels = labels[:-1]
    core = labels[-1] if labels else domain
    return core.capitalize() if core else None
