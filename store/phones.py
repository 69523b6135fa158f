"""Phone numbers as people type and PBXs send them, reduced to one matching key.

Chinese numbers arrive in many shapes: ``+86 138 1234 5678``, ``008613812345678``,
``8613812345678``, ``013812345678`` (a trunk 0 before a mobile), ``17951``-prefixed
IP dialling, full-width digits from an IME, ``010-6234 5678转8001`` with an
extension, or a bare ``62345678`` that only means something with the trunk's
area code.  Every one of them is reduced to E.164 where it has one; short
service numbers (10086, 95588, 110) keep their digits.  Matching is always on
the whole number, never on the last N digits.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

import phonenumbers
from phonenumbers import shortnumberinfo

# Carrier IP-dialling prefixes put before a long-distance number (China).
CN_IP_PREFIXES = ("17951", "12593", "17911", "17909", "10193", "11808")

_EXTENSION = re.compile(
    r"\s*(?:转|轉|分机|分機|ext\.?|extension|x|#)\s*(\d{1,8})\s*$", re.IGNORECASE
)
_SEPARATORS = re.compile(r"[\s\-().\/·]")

PhoneKind = Literal["mobile", "fixed", "service", "unknown"]


@dataclass(frozen=True)
class PhoneRegion:
    """Where a number was seen: the trunk's country, local area code, outside-line digit."""

    country: str = "CN"
    area_code: str | None = None
    outside_prefix: str | None = None


DEFAULT_REGION = PhoneRegion()


@dataclass(frozen=True)
class PhoneKey:
    raw: str
    e164: str | None
    extension: str | None
    kind: PhoneKind
    # What identities are matched on: the E.164 number, else ``<country>:<digits>``.
    match_key: str


def _kind(number: phonenumbers.PhoneNumber) -> PhoneKind:
    kind = phonenumbers.number_type(number)
    if kind in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        return "mobile"
    if kind == phonenumbers.PhoneNumberType.FIXED_LINE:
        return "fixed"
    if kind in (phonenumbers.PhoneNumberType.TOLL_FREE, phonenumbers.PhoneNumberType.SHARED_COST):
        return "service"
    return "unknown"


def _cn_national(digits: str, region: PhoneRegion) -> str:
    """Undo the ways a Chinese PBX or person prefixes a national number."""
    for prefix in CN_IP_PREFIXES:
        if digits.startswith(prefix) and len(digits) - len(prefix) >= 10:
            digits = digits[len(prefix) :]
            break
    if digits.startswith("0086"):
        return "+86" + digits[4:]
    if len(digits) == 13 and digits.startswith("861"):
        return "+" + digits
    if len(digits) == 12 and re.fullmatch(r"01[3-9]\d{9}", digits):
        return digits[1:]  # a trunk 0 dialled before a mobile number
    if region.area_code and re.fullmatch(r"[2-9]\d{6,7}", digits):
        return "0" + region.area_code.lstrip("0") + digits  # a local landline number
    return digits


def normalise_phone(raw: str | None, region: PhoneRegion = DEFAULT_REGION) -> PhoneKey | None:
    """Reduce a number as typed or sent by a PBX to a ``PhoneKey``; None if it has no digits."""
    if not raw:
        return None
    text = unicodedata.normalize("NFKC", raw).strip()
    extension = None
    if match := _EXTENSION.search(text):
        extension, text = match.group(1), text[: match.start()]
    text = _SEPARATORS.sub("", text)
    plus = text.startswith("+")
    digits = re.sub(r"\D", "", text)
    if not digits:
        return None
    if plus:
        return _key(raw, extension, digits, region, plus=True)[0]
    prefix = region.outside_prefix
    if prefix and digits.startswith(prefix) and len(digits) > len(prefix):
        # Some PBXs put the outside-line digit before the caller's number, some do not:
        # drop it unless only the number as sent is a real one (95588 behind a 9).
        stripped, valid = _key(raw, extension, digits[len(prefix) :], region)
        if not valid:
            whole, whole_valid = _key(raw, extension, digits, region)
            if whole_valid:
                return whole
        return stripped
    return _key(raw, extension, digits, region)[0]


def _key(
    raw: str, extension: str | None, digits: str, region: PhoneRegion, *, plus: bool = False
) -> tuple[PhoneKey, bool]:
    """The key of a number's digits, and whether the numbering plan knows that number."""
    if not plus:
        if region.country == "CN":
            candidate = _cn_national(digits, region)
            plus = candidate.startswith("+")
            digits = candidate.lstrip("+")
        elif digits.startswith("00"):
            plus, digits = True, digits[2:]
    if not plus and len(digits) <= 6:
        # Service numbers (10086, 95588, 110) exist only inside their country.
        key = PhoneKey(raw, None, extension, "service", f"{region.country}:{digits}")
        return key, _is_short_number(digits, region.country)
    try:
        number = phonenumbers.parse(("+" if plus else "") + digits, region.country)
    except phonenumbers.NumberParseException:
        number = None
    valid = number is not None and phonenumbers.is_valid_number(number)
    # A number the numbering plan does not know is only trusted when it was written
    # with its country code; a bare one (62345678 with no area code) stays digits.
    if number is not None and (valid or (plus and phonenumbers.is_possible_number(number))):
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        kind = _kind(number) if valid else "unknown"
        return PhoneKey(raw, e164, extension, kind, e164), valid
    return PhoneKey(raw, None, extension, "unknown", f"{region.country}:{digits}"), False


def _is_short_number(digits: str, country: str) -> bool:
    try:
        number = phonenumbers.parse(digits, country)
    except phonenumbers.NumberParseException:
        return False
    return shortnumberinfo.is_valid_short_number_for_region(number, country)
