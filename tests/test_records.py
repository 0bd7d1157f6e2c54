"""Record normalization: cleaning rules and every validation reason."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from linnet_core.features import product_text, title_text
from linnet_core.records import MAX_CHARS, Reason, RecordError, dead_letter, normalize


def test_normalizes_fields() -> None:
    record = normalize({
        "product_id": " p1 ", "title": "<b>Red &amp; blue</b>  mug", "tags": "kitchen, , mugs",
        "description": "<p>Line one</p><script>x()</script><p>two</p>", "gpt_id": "4434",
        "image_files": ["images/a.jpg", "gs://bucket/b.png"], "updated_at": "2026-11-01T10:00:00Z",
    }, image_root="/data")
    assert record["product_id"] == "p1"
    assert record["title"] == "Red & blue mug"
    assert record["description"] == "Line one two"
    assert record["tags"] == ["kitchen", "mugs"]
    assert record["image_uris"] == ["/data/images/a.jpg", "gs://bucket/b.png"]
    assert record["gpt_id"] == 4434
    assert record["updated_at"] == dt.datetime(2026, 11, 1, 10, tzinfo=dt.UTC)
    assert record["collections"] == []


def test_oversize_text_is_truncated_and_bad_utf8_replaced() -> None:
    record = normalize({"product_id": "p", "title": b"caf\xe9 \xff ok", "description": "word " * 3_000_000})
    assert record["title"] == "caf\ufffd \ufffd ok"
    assert len(record["description"]) <= MAX_CHARS["description"]
    assert normalize({"product_id": "p", "title": "bad \ud800 surrogate"})["title"] == "bad ? surrogate"


@pytest.mark.parametrize(("raw", "reason"), [
    ({"title": "no id"}, Reason.MISSING_PRODUCT_ID),
    ({"product_id": "  ", "title": "blank id"}, Reason.MISSING_PRODUCT_ID),
    ({"product_id": "p", "title": "  ", "description": "<p></p>"}, Reason.NO_CONTENT),
    ({"product_id": "p", "title": "t", "updated_at": "yesterday"}, Reason.BAD_TIMESTAMP),
    ({"product_id": "p", "title": "t", "tags": 5}, Reason.BAD_FIELD_TYPE),
    ({"product_id": "p", "title": "t", "gpt_id": "dogs"}, Reason.UNKNOWN_LABEL),
    (["not", "an", "object"], Reason.NOT_AN_OBJECT),
])
def test_rejections(raw: object, reason: Reason) -> None:
    with pytest.raises(RecordError) as caught:
        normalize(raw)
    assert caught.value.reason is reason


def test_image_only_product_is_valid() -> None:
    assert normalize({"product_id": "p", "image_uris": ["x.jpg"]})["image_uris"] == ["x.jpg"]


def test_dead_letter_row() -> None:
    row = dead_letter("validate", Reason.NO_CONTENT, "empty", {"product_id": "p9"}, run_id="r1")
    assert row == {"product_id": "p9", "stage": "validate", "reason": "no_text_or_image",
                   "error": "empty", "raw": '{"product_id": "p9"}', "run_id": "r1"}


def test_product_text_order_and_truncation() -> None:
    text = product_text({"title": "Mug", "product_type": "Kitchen", "vendor": "Acme",
                         "collections": ["Home"], "tags": ["a", "b"], "description": "long " * 500})
    assert text.startswith("Mug | type: Kitchen | vendor: Acme | collections: Home | tags: a, b | long")
    assert len(text) < 700


def test_title_text_is_title_and_type_only() -> None:
    record = {"title": "Mug", "product_type": "Kitchen", "vendor": "Acme", "tags": ["a"],
              "description": "x"}
    assert title_text(record) == "Mug | type: Kitchen"
    assert title_text({"title": "Mug"}) == "Mug"
    assert title_text({"product_type": "Kitchen"}) == "type: Kitchen"
    assert title_text({"description": "only a description"}) == ""


def test_core_does_not_import_beam() -> None:
    code = ("import sys, linnet_core.taxonomy, linnet_core.shopify, linnet_core.records, "
            "linnet_core.features; sys.exit('apache_beam' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
