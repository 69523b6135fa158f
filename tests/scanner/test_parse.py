"""Parsing repairs what real Chinese and broken mail gets wrong, and loses nothing."""

from __future__ import annotations

import base64
import json

import pytest

from daemon.cli import main as rapport
from scanner.classify import classify
from scanner.parse import parse_mail
from store.errors import PermanentError


def b64word(text: str, codec: str, label: str) -> str:
    return f"=?{label}?B?{base64.b64encode(text.encode(codec)).decode()}?="


def test_gbk_labelled_gb2312_decodes_everywhere() -> None:
    # 镕 exists in GBK/GB18030 but not in GB2312: the label lies, as it often does.
    raw = (
        f"From: {b64word('张镕', 'gbk', 'gb2312')} <zhang@example.cn>\r\n"
        f"Subject: {b64word('询价：镕铁', 'gbk', 'gb2312')}\r\n"
        "Content-Type: text/plain; charset=gb2312\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode() + "你好，镕铁价格".encode("gbk")
    mail = parse_mail(raw)
    assert mail.subject == "询价：镕铁"
    assert (mail.from_name, mail.from_addr) == ("张镕", "zhang@example.cn")
    assert mail.text == "你好，镕铁价格"


def test_undeclared_8bit_headers_from_old_mailers() -> None:
    raw = (
        b"From: " + "李四".encode("gbk") + b" <li@example.cn>\r\n"
        b"Subject: " + "报价单".encode("gbk") + b"\r\n"
        b"To: " + "王五".encode() + b" <wang@example.com>\r\n\r\nbody\r\n"
    )
    mail = parse_mail(raw)
    assert mail.subject == "报价单" and mail.from_name == "李四"
    assert mail.to == [("王五", "wang@example.com")]
    assert any("undeclared 8-bit" in d for d in mail.defects)  # flagged, not silent


def test_encoded_word_split_inside_a_character() -> None:
    data = "报价单".encode()
    first = base64.b64encode(data[:4]).decode()  # cuts 价 in two
    second = base64.b64encode(data[4:]).decode()
    mail = parse_mail(f"Subject: =?UTF-8?B?{first}?= =?UTF-8?B?{second}?=\r\n\r\nx\r\n".encode())
    assert mail.subject == "报价单"


def test_attachment_names_rfc2231_and_encoded_word() -> None:
    raw = (
        "Subject: files\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        "--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        "--B\r\nContent-Type: application/pdf\r\n"
        "Content-Disposition: attachment; filename*=UTF-8''%E6%8A%A5%E4%BB%B7.pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQ=\r\n"
        f'--B\r\nContent-Type: application/vnd.ms-excel; name="{b64word("清单.xls", "gbk", "gb2312")}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--B--\r\n"
    ).encode()
    mail = parse_mail(raw)
    assert [(a.filename, a.content_type, a.payload) for a in mail.attachments] == [
        ("报价.pdf", "application/pdf", b"%PDF-1.4"),
        ("清单.xls", "application/vnd.ms-excel", b"\x00\x01\x02"),
    ]


def test_html_only_mail_gets_a_text_rendering() -> None:
    raw = (
        "Subject: hi\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        "<html><head><style>p{}</style></head><body><p>您好，</p><p>请报价&amp;交期<br>谢谢</p>"
        "<script>alert(1)</script></body></html>"
    ).encode()
    mail = parse_mail(raw)
    assert mail.text == "您好，\n\n请报价&交期\n谢谢"
    assert mail.html is not None and "<p>" in mail.html


def test_threading_headers_and_dates() -> None:
    raw = (
        b"Message-ID: <abc@x.cn>\r\nIn-Reply-To: <prev@y.cn>\r\n"
        b"References: <root@y.cn>\r\n <prev@y.cn>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0800\r\n\r\nx"
    )
    mail = parse_mail(raw)
    assert mail.message_id == "abc@x.cn"
    assert mail.in_reply_to == ["prev@y.cn"] and mail.references == ["root@y.cn", "prev@y.cn"]
    assert mail.date is not None and mail.date.isoformat() == "2026-11-02T02:00:00+00:00"
    bad = parse_mail(b"Date: yesterday-ish\r\nSubject: x\r\n\r\nx")
    assert bad.date is None and any(d.startswith("date:") for d in bad.defects)


def test_what_is_not_mail_is_refused_with_a_reason() -> None:
    with pytest.raises(PermanentError, match="empty"):
        parse_mail(b"  \r\n")


DSN = (
    "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\r\nTo: sales@rapport.test\r\n"
    "Subject: Undelivered Mail Returned to Sender\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/report; report-type=delivery-status; boundary=R\r\n\r\n"
    "--R\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n"
    "--R\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n\r\n"
    "Final-Recipient: rfc822; gone@customer.cn\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
    "--R\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <sent-1@rapport.test>\r\n"
    "To: gone@customer.cn\r\nSubject: quote\r\n\r\n--R--\r\n"
)


def test_standard_dsn_is_a_bounce_with_recipient_and_original() -> None:
    verdict = classify(parse_mail(DSN.encode()))
    assert verdict.kind == "bounce"
    assert verdict.bounced_recipients == ["gone@customer.cn"]
    assert verdict.bounced_message_id == "sent-1@rapport.test"


def test_chinese_provider_bounce_and_auto_replies() -> None:
    sina = (
        b"From: MAILER-DAEMON@sina.com\r\nTo: sales@rapport.test\r\nSubject: "
        + "邮件发送失败！".encode("gbk")
        + b"\r\n\r\n"
        + "邮件无法发送到您指定的地址中。\r\n\r\n<nobody@sina.com>:\r\n用户不存在\r\n".encode("gbk")
    )
    verdict = classify(parse_mail(sina))
    assert verdict.kind == "bounce" and verdict.bounced_recipients == ["nobody@sina.com"]

    for headers in (
        "Auto-Submitted: auto-replied\r\nSubject: Re: quote\r\n",
        f"Subject: {b64word('自动回复：报价', 'utf-8', 'utf-8')}\r\n",
        "Subject: Out of Office: back on Monday\r\n",
        "X-Autoreply: yes\r\nSubject: Re: hello\r\n",
    ):
        raw = f"From: Wang <wang@customer.cn>\r\n{headers}\r\nI am away.\r\n".encode()
        assert classify(parse_mail(raw)).kind == "auto_reply", headers
    bulk = b"From: news@shop.cn\r\nList-Unsubscribe: <mailto:u@shop.cn>\r\nSubject: Sale\r\n\r\nx"
    assert classify(parse_mail(bulk)).kind == "bulk"
    person = b"From: Li <li@customer.cn>\r\nSubject: Quote please\r\n\r\nHello"
    assert classify(parse_mail(person)).kind == "normal"


def test_inspect_prints_one_json_object_per_message(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a.eml").write_bytes(DSN.encode())
    (tmp_path / "b.eml").write_bytes(b"")
    assert (
        rapport(["mail", "inspect", "--json", str(tmp_path / "a.eml"), str(tmp_path / "b.eml")])
        == 0
    )
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["kind"] == "bounce" and first["from_addr"] == "MAILER-DAEMON@mx.example.com"
    assert first["bounced_recipients"] == ["gone@customer.cn"]
    assert set(first) >= {
        "message_id",
        "from_name",
        "reply_to",
        "to",
        "cc",
        "subject",
        "date",
        "text",
        "attachments",
        "in_reply_to",
        "references",
    }
    assert second["error"] == "empty message"
