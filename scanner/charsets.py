"""Charset labels as Chinese mailers really use them.

Mail labelled ``gb2312`` is very often GBK or GB18030 (characters such as 镕
exist only there), and ``big5`` mail often carries HKSCS characters.  Decoding
with the label's own codec garbles the whole subject, so the labels are
re-pointed at the supersets, process-wide, before anything decodes mail: both
mail-parser and the stdlib ``email`` package then decode such mail correctly,
and text that really is GB2312 or Big5 decodes the same as before.
"""

from __future__ import annotations

import codecs
import encodings
import encodings.aliases

# Normalised codec names (as encodings.normalize_encoding makes them) -> the superset.
SUPERSETS = {
    "gb2312": "gb18030",
    "gb2312_1980": "gb18030",
    "gb2312_80": "gb18030",
    "gbk": "gb18030",
    "cp936": "gb18030",
    "ms936": "gb18030",
    "936": "gb18030",
    "x_gbk": "gb18030",
    "euc_cn": "gb18030",
    "euccn": "gb18030",
    "eucgb2312_cn": "gb18030",
    "chinese": "gb18030",
    "csgb2312": "gb18030",
    "csiso58gb231280": "gb18030",
    "iso_ir_58": "gb18030",
    "big5": "big5hkscs",
    "big5_tw": "big5hkscs",
    "csbig5": "big5hkscs",
    "x_x_big5": "big5hkscs",
}

_installed = False


def _flush_codec_cache(_name: str) -> None:
    return None


def install() -> None:
    """Point the labels at their supersets (idempotent; call before any mail is decoded)."""
    global _installed
    if _installed:
        return
    encodings.aliases.aliases.update(SUPERSETS)
    # A label looked up before this call sits in two caches: the encodings package's
    # own, and the interpreter's, which unregistering any search function empties (3.10+).
    getattr(encodings, "_cache", {}).clear()
    codecs.register(_flush_codec_cache)
    codecs.unregister(_flush_codec_cache)
    _installed = True


def codec_for(label: str | None) -> str | None:
    """The codec to decode a declared charset with, or None if Python knows no such codec."""
    if not label:
        return None
    install()
    try:
        return codecs.lookup(label.strip().strip('"').lower()).name
    except LookupError:
        return None


install()
