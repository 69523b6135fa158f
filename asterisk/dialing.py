"""Click-to-dial: what the PBX must dial for a number as the CRM stores it."""

from __future__ import annotations

import re

import phonenumbers

from store.phones import PhoneRegion, normalise_phone


def dialable(number: str, region: PhoneRegion) -> str | None:
    """The digits to dial from a PBX in ``region``: national form at home, 00 abroad.

    ``+86 138 1234 5678`` dials ``13812345678`` from China and ``02887654321``
    keeps its trunk 0; a short service number dials as it is; the outside-line
    digit is put in front when the PBX needs one.  None when there is nothing to dial.
    """
    key = normalise_phone(number, region)
    if key is None:
        return None
    if key.e164 is None:
        digits = key.match_key.partition(":")[2]
    else:
        parsed = phonenumbers.parse(key.e164)
        if phonenumbers.region_code_for_number(parsed) == region.country:
            national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
            digits = re.sub(r"\D", "", national)
        else:
            digits = "00" + key.e164[1:]
    if not digits:
        return None
    return (region.outside_prefix or "") + digits
