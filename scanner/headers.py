"""Header text as it really arrives: RFC 2047 words, raw 8-bit bytes, broken labels.

Every function returns the text and the problems met; nothing is dropped
silently: undecodable bytes become U+FFFD and a defect says where.
"""

from __future__ import annotations

import email.header
import email.utils
import re

from scanner.charsets import codec_for

# Raw 8-bit header bytes from old mailers and web forms carry no label: try these in turn.
UNDECLARED_GUESSES = ("utf-8", "gb18030", "big5hkscs")


def _decode_bytes(data: bytes, label: str | None, where: str, defects: list[str]) -> str:
    codec = codec_for(label) if label else None
    if label and codec is None:
        defects.append(f"{where}: unknown charset {label!r}")
    for candidate in ([codec] if codec else []) + list(UNDECLARED_GUESSES):
        try:
            return data.decode(candidate)
        except UnicodeDecodeError:
            continue
    defects.append(f"{where}: bytes undecodable as {label or 'any known charset'}; replaced")
    return data.decode(codec or "utf-8", errors="replace")


def _undo_surrogates(value: str, where: str, defects: list[str]) -> str:
    """The stdlib keeps raw 8-bit header bytes as surrogate escapes: decode them properly."""
    if not any("\udc80" <= ch <= "\udcff" for ch in value):
        return value
    raw = value.encode("utf-8", "surrogateescape")
    for candidate in UNDECLARED_GUESSES:
        try:
            text = raw.decode(candidate)
        except UnicodeDecodeError:
            continue
        if candidate != "utf-8":
            defects.append(f"{where}: undeclared 8-bit text read as {candidate}")
        return text
    defects.append(f"{where}: undeclared 8-bit bytes undecodable; replaced")
    return raw.decode("utf-8", errors="replace")


def decode_text(value: str | None, where: str, defects: list[str]) -> str:
    """Decode an unstructured header value (Subject, a display name, a file name)."""
    if not value:
        return ""
    value = _undo_surrogates(str(value), where, defects)
    if "=?" not in value:
        return _unfold(value)
    try:
        chunks = email.header.decode_header(value)
    except (ValueError, AssertionError, LookupError) as err:
        defects.append(f"{where}: malformed encoded word ({err}); kept as written")
        return _unfold(value)
    # Adjacent words in one charset are decoded together: a character split between
    # two words (common from Outlook and Foxmail) then comes out whole.
    merged: list[tuple[bytes | str, str | None]] = []
    for data, label in chunks:
        last = merged[-1] if merged else None
        if last and isinstance(data, bytes) and isinstance(last[0], bytes) and last[1] == label:
            merged[-1] = (last[0] + data, label)
        else:
            merged.append((data, label))
    out = [
        data if isinstance(data, str) else _decode_bytes(data, label, where, defects)
        for data, label in merged
    ]
    return _unfold("".join(out))


def _unfold(text: str) -> str:
    return re.sub(r"\r?\n[ \t]+", " ", text).strip()


def decode_addresses(
    values: list[str] | None, where: str, defects: list[str]
) -> list[tuple[str, str]]:
    """(display name, address) pairs from address headers; names decoded, addresses as given."""
    if not values:
        return []
    cleaned = [_undo_surrogates(str(v), where, defects) for v in values]
    pairs = []
    for name, address in email.utils.getaddresses(cleaned):
        address = address.strip()
        if not address:
            continue
        pairs.append((decode_text(name, where, defects), address))
    return pairs


MESSAGE_ID = re.compile(r"<([^<>\s]+)>")


def message_ids(value: str | None) -> list[str]:
    """Message-IDs in a header, without angle brackets, in order, without repeats."""
    if not value:
        return []
    # Raw 8-bit bytes in an id (seen in spam) are kept readable rather than as escapes.
    value = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    found = MESSAGE_ID.findall(value)
    if not found and str(value).strip() and " " not in str(value).strip():
        found = [str(value).strip().strip("<>")]  # a bare id some mailers write
    return list(dict.fromkeys(found))
