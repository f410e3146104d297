"""Record keys and handles are injective: two records never share a key-map entry or a Jira label."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mlconnector.mapping import natural_key, record_label
from mlconnector.sync.keys import HANDLE_MAX, decode_key, encode_key, handle

# Parts as PeopleSoft and JD Edwards could hold them, biased towards the characters that collided.
part = st.text(alphabet=st.sampled_from("AB01_.-| \\/#~é"), min_size=1, max_size=8)
key = st.tuples(part, part)


@given(key)
def test_encoded_keys_round_trip(parts: tuple[str, str]) -> None:
    assert decode_key(encode_key(parts)) == parts


@given(key, key)
def test_distinct_keys_never_share_an_encoding_or_a_handle(a: tuple[str, str], b: tuple[str, str]) -> None:
    if a != b:
        assert encode_key(a) != encode_key(b)
        assert handle("psft-po", a) != handle("psft-po", b)


@given(key)
def test_handles_fit_a_jira_label(parts: tuple[str, str]) -> None:
    h = handle("psft-po", parts)
    assert len(h) <= HANDLE_MAX and " " not in h and h.startswith("psft-po-")


def test_the_collisions_found_in_review_are_apart() -> None:
    # A '|' inside a part, and two keys that sanitise alike, each became one record before.
    assert natural_key("purchase_orders", {"BUSINESS_UNIT": "US|01", "PO_ID": "X"}) != \
        natural_key("purchase_orders", {"BUSINESS_UNIT": "US", "PO_ID": "01|X"})
    assert record_label("purchase_orders", encode_key(("US001", "PO 7"))) != \
        record_label("purchase_orders", encode_key(("US001", "PO_7")))
    long_a, long_b = ("US001", "A" * 300), ("US001", "A" * 299 + "B")
    assert handle("psft-po", long_a) != handle("psft-po", long_b)


def test_plain_keys_keep_the_label_earlier_versions_wrote() -> None:
    # Issues created before handles were hashed must still be found by their label after a state loss.
    assert natural_key("purchase_orders", {"BUSINESS_UNIT": "US001", "PO_ID": "0000000123"}) == "US001|0000000123"
    assert record_label("purchase_orders", "US001|0000000123") == "psft-po-US001-0000000123"
