"""Product records: normalization of raw merchant input into the `schemas/products.json` shape.

Every raw record either becomes a clean record or raises `RecordError` with a reason code, which
pipelines turn into a dead letter; nothing is dropped silently.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

MAX_CHARS = {"title": 1_000, "description": 20_000, "vendor": 500, "product_type": 500}
MAX_LIST_ITEM_CHARS = 200
MAX_LIST_ITEMS = 100
MAX_RAW_CHARS = 1_000_000
TEXT_FIELDS = ("title", "description", "vendor", "product_type")
LIST_FIELDS = ("collections", "tags", "options")


class Reason(StrEnum):
    """Dead-letter reason codes; the value is what the dead-letter table stores."""

    INVALID_JSON = "invalid_json"
    CORRUPT_FILE = "corrupt_file"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_PRODUCT_ID = "missing_product_id"
    NO_CONTENT = "no_text_or_image"
    BAD_FIELD_TYPE = "bad_field_type"
    BAD_TIMESTAMP = "bad_updated_at"
    UNKNOWN_LABEL = "unknown_label_id"
    LABEL_PATH_MISMATCH = "label_path_mismatch"
    DUPLICATE_PRODUCT_ID = "duplicate_product_id"
    EMBEDDING_FAILED = "embedding_failed"
    SCORING_FAILED = "scoring_failed"


class RecordError(ValueError):
    """A record that cannot be used, with a machine-readable reason."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _TextExtractor(HTMLParser):
    _BLOCK = {"p", "br", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table"}
    _SKIP = {"script", "style"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self._BLOCK:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


_WHITESPACE = re.compile(r"\s+")
_LOOKS_LIKE_HTML = re.compile(r"<[a-zA-Z/!][^>]*>|&[#a-zA-Z0-9]+;")


def clean_text(value: Any, limit: int) -> str | None:
    """Plain, valid UTF-8 text: bytes decoded with replacement, HTML stripped, whitespace folded,
    truncated to `limit` characters. Empty text becomes None."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    elif not isinstance(value, str):
        value = str(value)
    # Lone surrogates (from JSON escapes of broken UTF-8) cannot be written to Parquet.
    value = value.encode("utf-8", errors="replace").decode("utf-8")
    # Very long inputs are cut before parsing so a 10 MB description costs no more than a short one.
    value = value[: limit * 4]
    if _LOOKS_LIKE_HTML.search(value):
        parser = _TextExtractor()
        parser.feed(value)
        parser.close()
        value = html.unescape("".join(parser.parts))
    value = _WHITESPACE.sub(" ", value).strip()
    return value[:limit].rstrip() or None


def clean_list(value: Any) -> list[str]:
    """A list of short clean strings; a comma-separated string is split."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        value = (value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value).split(",")
    elif not isinstance(value, Iterable):
        raise RecordError(Reason.BAD_FIELD_TYPE, f"expected a list or string, got {type(value).__name__}")
    items = (clean_text(item, MAX_LIST_ITEM_CHARS) for item in value)
    return [item for item in items if item][:MAX_LIST_ITEMS]


def parse_timestamp(value: Any) -> dt.datetime | None:
    """A timezone-aware UTC datetime from ISO-8601 text, epoch seconds or a datetime."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, dt.datetime):
            parsed = value
        elif isinstance(value, (int, float)):
            parsed = dt.datetime.fromtimestamp(value, tz=dt.UTC)
        else:
            parsed = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError) as error:
        raise RecordError(Reason.BAD_TIMESTAMP, f"cannot parse updated_at {value!r}: {error}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def _image_uris(raw: Mapping[str, Any], image_root: str | None) -> list[str]:
    uris = raw.get("image_uris")
    if uris is None:
        uris = raw.get("image_files")
    uris = clean_list(uris) if not isinstance(uris, str) else [uris]
    if image_root is None:
        return uris
    return [uri if "://" in uri or Path(uri).is_absolute() else str(Path(image_root) / uri) for uri in uris]


def _label_id(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RecordError(Reason.UNKNOWN_LABEL, f"label gpt_id {value!r} is not a numeric id") from None


def normalize(raw: Mapping[str, Any], image_root: str | None = None) -> dict[str, Any]:
    """Turn one raw product (JSON object or table row) into a record of the products schema.

    Args:
        raw: merchant fields; `image_files` is accepted as an alias of `image_uris`.
        image_root: relative image paths are resolved against it (URIs and absolute paths are kept).

    Raises:
        RecordError: no `product_id`; neither text nor image; a field of the wrong type; a bad timestamp.
    """
    if not isinstance(raw, Mapping):
        raise RecordError(Reason.NOT_AN_OBJECT, f"record is a {type(raw).__name__}, not an object")
    product_id = clean_text(raw.get("product_id"), MAX_LIST_ITEM_CHARS * 5)
    if not product_id:
        raise RecordError(Reason.MISSING_PRODUCT_ID, "record has no product_id")
    record: dict[str, Any] = {"product_id": product_id, "store": clean_text(raw.get("store"), 500)}
    for name in TEXT_FIELDS:
        record[name] = clean_text(raw.get(name), MAX_CHARS[name])
    for name in LIST_FIELDS:
        record[name] = clean_list(raw.get(name))
    record["image_uris"] = _image_uris(raw, image_root)
    record["lang"] = clean_text(raw.get("lang"), 20)
    record["updated_at"] = parse_timestamp(raw.get("updated_at"))
    record["gpt_id"] = _label_id(raw.get("gpt_id"))
    record["gpt_path"] = clean_text(raw.get("gpt_path"), 1_000)
    record["shopify_category_id"] = clean_text(raw.get("shopify_category_id"), 200)
    if not record["image_uris"] and not any(record[name] for name in TEXT_FIELDS + LIST_FIELDS):
        raise RecordError(Reason.NO_CONTENT, f"product {product_id} has neither text nor image")
    return record


def raw_json(raw: Any) -> str:
    """The raw input as JSON text for the dead-letter table, truncated to a bounded size."""
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", errors="replace")
    else:
        try:
            text = json.dumps(raw, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(raw)
    return text.encode("utf-8", errors="replace").decode("utf-8")[:MAX_RAW_CHARS]


def dead_letter(stage: str, reason: Reason | str, error: str, raw: Any,
                product_id: str | None = None, run_id: str | None = None) -> dict[str, Any]:
    """A row of the dead-letter schema (`schemas/dead_letters.json`)."""
    if product_id is None and isinstance(raw, Mapping):
        product_id = raw.get("product_id") and str(raw.get("product_id"))
    return {
        "product_id": product_id,
        "stage": stage,
        "reason": reason.value if isinstance(reason, Reason) else str(reason),
        "error": error[:10_000],
        "raw": raw_json(raw),
        "run_id": run_id,
    }


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a logical day in UTC: the rows of partition `date=day` by `updated_at`."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def updated_on(record: dict[str, Any], day: dt.date, column: str = "updated_at") -> bool:
    """Whether the record's timestamp `column` falls on `day` (UTC); records without one never do."""
    value = record.get(column)
    if value is None:
        return False
    start, end = day_bounds(day)
    return start <= value < end
