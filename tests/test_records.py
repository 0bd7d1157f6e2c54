"""Record normalization: cleaning rules and every validation reason."""

from __future__ import annotations

import datetime as dt
import re

import pyarrow as pa
import pytest

import schemas
from linnet_core.features import product_text, title_text
from linnet_core.records import MAX_CHARS, Reason, RecordError, dead_letter, normalize, validate
from pipelines.io import to_row


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


def test_relative_images_resolve_under_a_local_or_remote_root() -> None:
    raw = {"product_id": "p", "image_files": ["images/x.jpg", "gs://b/y.jpg", "/abs/z.jpg"]}
    assert normalize(raw, image_root="gs://b/input/")["image_uris"] == [
        "gs://b/input/images/x.jpg", "gs://b/y.jpg", "/abs/z.jpg"]
    assert normalize(raw, image_root="/data")["image_uris"][0] == "/data/images/x.jpg"


def test_dead_letter_row() -> None:
    row = dead_letter("validate", Reason.NO_CONTENT, "empty", {"product_id": "p9"}, run_id="r1")
    assert row == {"product_id": "p9", "stage": "validate", "reason": "no_text_or_image",
                   "error": "empty", "raw": '{"product_id": "p9"}', "run_id": "r1"}


def test_schemas_are_parsed_once_per_process() -> None:
    """Writers shape every row by its table's schema (`io.to_row`): one parse serves them all."""
    assert schemas.load("categorized") is schemas.load("categorized")
    assert to_row({"product_id": "p1", "tags": None}, "products")["tags"] == []


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


def _writable(row: dict, table: str) -> None:
    """Raises unless `row` converts to the Arrow schema of `table` (what the Parquet writer needs)."""
    pa.Table.from_pylist([to_row(row, table)], schema=schemas.arrow_schema(table))


def test_lone_surrogate_escapes_become_writable_text() -> None:
    """Reproduction 1: `"A\\ud800B"` in a title or a product_id crashed import and score."""
    for line in (rb'{"product_id": "p1", "title": "A\ud800B"}', rb'{"product_id": "p\udfff1", "title": "t"}'):
        record, dead = validate(line)
        assert dead is None and "\ufffd" not in record["title"]
        _writable(record, "products")
    assert validate(rb'{"product_id": "p1", "title": "A\ud800B"}')[0]["title"] == "A?B"
    record, dead = validate(rb'{"product_id": "p\ud800", "updated_at": "x"}')
    assert record is None and dead["product_id"] == "p?" and dead["reason"] == "bad_updated_at"
    _writable(dead, "dead_letters")


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 10**20, 2**63, 3237.7, 1.5,
                                   True, -5, 0, "12a", "\u0663", "1_000", [4434], {"id": 1}])
def test_a_label_that_is_no_whole_gpt_id_is_rejected(value: object) -> None:
    """Reproduction 2: Infinity and 1e20 crashed runs, 3237.7 was truncated to another category."""
    with pytest.raises(RecordError) as caught:
        normalize({"product_id": "p", "title": "t", "gpt_id": value})
    assert caught.value.reason is Reason.UNKNOWN_LABEL


@pytest.mark.parametrize(("value", "expected"), [(4434, 4434), (4434.0, 4434), (" 4434 ", 4434), ("", None)])
def test_whole_label_ids_are_kept(value: object, expected: int | None) -> None:
    assert normalize({"product_id": "p", "title": "t", "gpt_id": value})["gpt_id"] == expected


def test_json_infinity_label_is_a_dead_letter_not_a_crash() -> None:
    record, dead = validate(b'{"product_id": "p1", "title": "t", "gpt_id": Infinity}')
    assert record is None and dead["reason"] == "unknown_label_id" and dead["product_id"] == "p1"
    _writable(dead, "dead_letters")


def test_optional_labels_drop_a_bad_label_and_keep_the_product() -> None:
    """Reproduction 9: score dead-lettered a product whose (optional) label was bad."""
    raw = {"product_id": "p", "title": "t", "gpt_id": 3237.7, "gpt_path": "A > B"}
    record = normalize(raw, optional_labels=True)
    assert (record["title"], record["gpt_id"], record["gpt_path"]) == ("t", None, None)
    assert validate(raw, optional_labels=True)[1] is None
    assert validate(raw)[1]["reason"] == "unknown_label_id"


@pytest.mark.parametrize(("raw", "field"), [
    ({"product_id": "p", "title": "t", "tags": 5}, "tags"),
    ({"product_id": "p", "title": {"en": "t"}}, "title"),
    ({"product_id": ["p"], "title": "t"}, "product_id"),
    ({"product_id": "p", "title": "t", "options": [{"name": "Size"}]}, "options[]"),
    ({"product_id": "p", "title": "t", "vendor": float("nan")}, "vendor"),
])
def test_bad_field_type_names_the_field(raw: dict, field: str) -> None:
    """Reproduction 9: `bad_field_type` did not say which field."""
    with pytest.raises(RecordError, match=f"field '{re.escape(field)}'") as caught:
        normalize(raw)
    assert caught.value.reason is Reason.BAD_FIELD_TYPE


@pytest.mark.parametrize("line", [b"[" * 100_000, b'{"a": ' * 50_000, b"1" * 5_000, b"\xff\xfe{", b"{}}"])
def test_any_unparseable_line_is_an_invalid_json_dead_letter(line: bytes) -> None:
    record, dead = validate(line, run_id="r1")
    assert record is None
    assert (dead["stage"], dead["reason"], dead["run_id"]) == ("read", "invalid_json", "r1")
    _writable(dead, "dead_letters")


def test_dead_letters_carry_the_run_id() -> None:
    """Reproduction 9: dead letters of the read and validate stages had run_id null."""
    assert validate(b"{broken", run_id="r7")[1]["run_id"] == "r7"
    assert validate({"title": "no id"}, run_id="r7")[1]["run_id"] == "r7"
