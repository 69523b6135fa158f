"""Phone numbers in every shape Chinese PBXs and people use reduce to one key."""

from __future__ import annotations

import pytest

from store.phones import PhoneRegion, normalise_phone

BEIJING = PhoneRegion(country="CN", area_code="10")


@pytest.mark.parametrize(
    "raw",
    [
        "+86 138 1234 5678",
        "008613812345678",
        "8613812345678",
        "013812345678",
        "１３８１２３４５６７８",
        "17951 13812345678",
        "12593-138-1234-5678",
        "(+86) 138-1234-5678",
    ],
)
def test_mobile_forms_share_one_key(raw: str) -> None:
    key = normalise_phone(raw, BEIJING)
    assert key is not None
    assert key.e164 == "+8613812345678"
    assert key.match_key == "+8613812345678"
    assert key.kind == "mobile"


def test_local_landline_takes_the_trunk_area_code() -> None:
    key = normalise_phone("6234 5678", BEIJING)
    assert key is not None and key.e164 == "+861062345678" and key.kind == "fixed"
    # Without an area code the bare number cannot be placed and keeps its digits.
    bare = normalise_phone("62345678", PhoneRegion())
    assert bare is not None and bare.e164 is None and bare.match_key == "CN:62345678"


@pytest.mark.parametrize(
    ("raw", "extension"),
    [("010-6234 5678转8001", "8001"), ("010 62345678 分机 12", "12"), ("010-62345678 ext. 7", "7")],
)
def test_extension_is_split_off(raw: str, extension: str) -> None:
    key = normalise_phone(raw, BEIJING)
    assert key is not None
    assert key.e164 == "+861062345678"
    assert key.extension == extension


@pytest.mark.parametrize("raw", ["10086", "95588", "110", "12345"])
def test_short_service_numbers_stay_raw(raw: str) -> None:
    key = normalise_phone(raw, BEIJING)
    assert key is not None
    assert key.e164 is None and key.kind == "service" and key.match_key == f"CN:{raw}"


def test_outside_line_digit_is_dropped_only_when_configured() -> None:
    with_nine = normalise_phone("913812345678", PhoneRegion(outside_prefix="9"))
    assert with_nine is not None and with_nine.e164 == "+8613812345678"
    assert normalise_phone("913812345678", PhoneRegion()) != with_nine


@pytest.mark.parametrize(("sent", "service"), [("95588", "95588"), ("995588", "95588"),
                                               ("96110", "96110"), ("910086", "10086")])  # fmt: skip
def test_a_service_number_that_starts_with_the_outside_digit_keeps_it(
    sent: str, service: str
) -> None:
    # Regression: with outside line 9, a PBX that passes 95588 on unprefixed made it 5588.
    key = normalise_phone(sent, PhoneRegion(outside_prefix="9"))
    assert key is not None and key.match_key == f"CN:{service}" and key.kind == "service"


def test_other_countries_and_garbage() -> None:
    us = normalise_phone("+1 (650) 253-0000", BEIJING)
    assert us is not None and us.e164 == "+16502530000"
    assert normalise_phone("", BEIJING) is None
    assert normalise_phone("n/a", BEIJING) is None
    # Same last 8 digits, different numbers: never the same key.
    a = normalise_phone("13812345678", BEIJING)
    b = normalise_phone("13912345678", BEIJING)
    assert a is not None and b is not None and a.match_key != b.match_key
