"""Product records: normalization of raw merchant input into the `schemas/products.json` shape.

Every raw record either becomes a clean record or raises `RecordError` with a reason code, which
pipelines turn into a dead letter; nothing is dropped silently.
"""

from __future__ import annotations

import datetime as dt
import html
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

MAX_CHARS = {"title": 1_000, "description": 20_000, "vendor": 500, "product_type": 500}
# The key fields' limits, beside the text fields'.
MAX_KEY_CHARS = {"product_id": 1_000, "store": 500}
MAX_LIST_ITEM_CHARS = 200
MAX_LIST_ITEMS = 100
MAX_RAW_CHARS = 1_000_000
TEXT_FIELDS = ("title", "description", "vendor", "product_type")
LIST_FIELDS = ("collections", "tags", "options")
LABEL_FIELDS = ("gpt_id", "gpt_path", "shopify_category_id")


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
    UNEXPECTED = "unexpected_error"


class RecordError(ValueError):
    """A record that cannot be used, with a machine-readable reason and, where one field is to blame,
    its name (the online service names it in its answer)."""

    def __init__(self, reason: Reason, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field


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


def _scrub(text: str) -> str:
    """Valid UTF-8 text: lone surrogates (JSON escapes of broken UTF-8) become "?", as Parquet,
    Beam's coders and every encoder need encodable text."""
    return text.encode("utf-8", errors="replace").decode("utf-8")


def _as_text(value: Any, field: str) -> str:
    """A scalar as text; containers (and non-finite numbers) are a field of the wrong type."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        try:
            return str(value)
        except ValueError:  # an int past Python's digit limit for str()
            pass
    raise RecordError(Reason.BAD_FIELD_TYPE, f"field {field!r}: expected text, got {_describe(value)}",
                      field)


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if isinstance(value, float) else type(value).__name__


def clean_text(value: Any, limit: int, field: str = "text") -> str | None:
    """Plain, valid UTF-8 text: bytes decoded with replacement, HTML stripped, whitespace folded,
    truncated to `limit` characters. Empty text becomes None.

    Raises:
        RecordError: `BAD_FIELD_TYPE` (naming `field`) for a list, object or non-finite number.
    """
    if value is None:
        return None
    # Very long inputs are cut before parsing so a 10 MB description costs no more than a short one.
    value = _scrub(_as_text(value, field)[: limit * 4])
    if _LOOKS_LIKE_HTML.search(value):
        parser = _TextExtractor()
        parser.feed(value)
        parser.close()
        value = html.unescape("".join(parser.parts))
    value = _WHITESPACE.sub(" ", value).strip()
    return value[:limit].rstrip() or None


def clean_list(value: Any, field: str = "list") -> list[str]:
    """A list of at most MAX_LIST_ITEMS short clean strings; a comma-separated string is split.

    Raises:
        RecordError: `BAD_FIELD_TYPE` (naming `field`) for a number, an object or a nested list.
    """
    if value is None:
        return []
    if isinstance(value, (str, bytes, bytearray)):
        value = _as_text(value, field)[: MAX_LIST_ITEMS * MAX_LIST_ITEM_CHARS * 4].split(",")
    elif isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise RecordError(Reason.BAD_FIELD_TYPE,
                          f"field {field!r}: expected a list or string, got {_describe(value)}", field)
    items = (clean_text(item, MAX_LIST_ITEM_CHARS, f"{field}[]") for item in value)
    return list(itertools.islice((item for item in items if item), MAX_LIST_ITEMS))


def parse_timestamp(value: Any) -> dt.datetime | None:
    """A timezone-aware UTC datetime from ISO-8601 text, epoch seconds or a datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or isinstance(value, (Mapping, list, tuple)):
        raise RecordError(Reason.BAD_TIMESTAMP, f"updated_at is a {type(value).__name__}, not a time",
                          "updated_at")
    try:
        if isinstance(value, dt.datetime):
            parsed = value
        elif isinstance(value, dt.date):
            parsed = dt.datetime.combine(value, dt.time())
        elif isinstance(value, (int, float)):
            parsed = dt.datetime.fromtimestamp(value, tz=dt.UTC)
        else:
            text = _as_text(value, "updated_at")[:64].strip()
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError) as error:
        raise RecordError(Reason.BAD_TIMESTAMP, f"cannot parse updated_at {_short(value)}: {error}",
                          "updated_at") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError as error:  # an offset that moves year 1 or 9999 out of range
        raise RecordError(Reason.BAD_TIMESTAMP, f"cannot parse updated_at {_short(value)}: {error}",
                          "updated_at") from None


def _short(value: Any) -> str:
    """repr of a value, cut to a length an error message can carry."""
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "…"


def _image_uris(raw: Mapping[str, Any], image_root: str | None) -> list[str]:
    field = "image_uris" if raw.get("image_uris") is not None else "image_files"
    uris = raw.get(field)
    if isinstance(uris, (str, bytes, bytearray)):  # one URI (it may contain commas)
        uris = [uris]
    uris = clean_list(uris, field)
    if image_root is None:
        return uris
    return [uri if "://" in uri or Path(uri).is_absolute() else _under(image_root, uri) for uri in uris]


def _under(root: str, relative: str) -> str:
    """`relative` under `root`, a local folder or a URI (`Path` would fold `gs://b` into `gs:/b`)."""
    return f"{root.rstrip('/')}/{relative}" if "://" in root else str(Path(root) / relative)


_DIGITS = re.compile(r"[0-9]{1,19}")


def label_id(value: Any) -> int | None:
    """A GPT id from an int, an integral float or a string of ASCII digits; anything else
    (fractions, NaN, ±Infinity, booleans, ids past int64) is not an id: no silent truncation.

    Raises:
        RecordError: `UNKNOWN_LABEL`.
    """
    if value is None or value == "":
        return None
    number: Any = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, (str, bytes)) and _DIGITS.fullmatch(text := _as_text(value, "gpt_id").strip()):
        number = int(text)
    if number is None or not 0 < number < 2**63:
        raise RecordError(Reason.UNKNOWN_LABEL, f"label gpt_id {_short(value)} is not a GPT id", "gpt_id")
    return number


def normalize(raw: Mapping[str, Any], image_root: str | None = None,
              optional_labels: bool = False) -> dict[str, Any]:
    """Turn one raw product (JSON object or table row) into a record of the products schema.

    Total over any input: the result is writable to the products table, or RecordError is raised.

    Args:
        raw: merchant fields; `image_files` is accepted as an alias of `image_uris`.
        image_root: relative image paths are resolved against it (URIs and absolute paths are kept).
        optional_labels: a bad label (gpt_id, gpt_path, shopify_category_id) is dropped, not an
            error: scoring needs no label, so a bad one must not keep a product from being scored.

    Raises:
        RecordError: no `product_id`; neither text nor image; a field of the wrong type; a bad
            timestamp; a label that is no GPT id (unless `optional_labels`).
    """
    if not isinstance(raw, Mapping):
        raise RecordError(Reason.NOT_AN_OBJECT, f"record is a {type(raw).__name__}, not an object")
    product_id = clean_text(raw.get("product_id"), MAX_KEY_CHARS["product_id"], "product_id")
    if not product_id:
        raise RecordError(Reason.MISSING_PRODUCT_ID, "record has no product_id", "product_id")
    store = clean_text(raw.get("store"), MAX_KEY_CHARS["store"], "store")
    record: dict[str, Any] = {"product_id": product_id, "store": store}
    for name in TEXT_FIELDS:
        record[name] = clean_text(raw.get(name), MAX_CHARS[name], name)
    for name in LIST_FIELDS:
        record[name] = clean_list(raw.get(name), name)
    record["image_uris"] = _image_uris(raw, image_root)
    record["lang"] = clean_text(raw.get("lang"), 20, "lang")
    record["updated_at"] = parse_timestamp(raw.get("updated_at"))
    try:
        record.update(_labels(raw))
    except RecordError:
        if not optional_labels:
            raise
        record.update(dict.fromkeys(LABEL_FIELDS))
    if not record["image_uris"] and not any(record[name] for name in TEXT_FIELDS + LIST_FIELDS):
        raise RecordError(Reason.NO_CONTENT, f"product {product_id} has neither text nor image")
    return record


def _labels(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {"gpt_id": label_id(raw.get("gpt_id")),
            "gpt_path": clean_text(raw.get("gpt_path"), 1_000, "gpt_path"),
            "shopify_category_id": clean_text(raw.get("shopify_category_id"), 200, "shopify_category_id")}


def parse_json_line(line: bytes) -> Any:
    """One JSONL line → its value (invalid UTF-8 replaced).

    Raises:
        RecordError: `INVALID_JSON` for anything json cannot parse, nesting too deep for it included.
    """
    try:
        return json.loads(line.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError) as error:
        raise RecordError(Reason.INVALID_JSON, f"{type(error).__name__}: {str(error)[:500]}") from None


def validate(raw: Any, image_root: str | None = None, run_id: str | None = None,
             optional_labels: bool = False, source: Any = None,
             where: str = "") -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The one rule every reader applies to a raw record: (record, None) or (None, dead letter).

    Args:
        raw: a parsed record, or the undecoded JSONL line (bytes), parsed here.
        source: what the dead letter keeps as `raw` (default: `raw`), e.g. the JSONL line.
        where: where the record came from (`file:line`), prefixed to the dead letter's error.
    """
    stage = "read" if isinstance(raw, bytes) else "validate"
    try:
        if isinstance(raw, bytes):
            source, raw = raw, parse_json_line(raw)
            stage = "validate"
        return normalize(raw, image_root, optional_labels), None
    except Exception as error:  # noqa: BLE001 - no record may fail a run; RecordError is the expected one
        reason = error.reason if isinstance(error, RecordError) else Reason.UNEXPECTED
        message = str(error) if isinstance(error, RecordError) else f"{type(error).__name__}: {error}"
        return None, dead_letter(stage, reason, f"{where}: {message}" if where else message,
                                 raw if source is None else source, product_id=_product_id_of(raw),
                                 run_id=run_id)


def raw_json(raw: Any) -> str:
    """The raw input as JSON text for the dead-letter table, truncated to a bounded size."""
    if isinstance(raw, (bytes, bytearray)):
        text = bytes(raw[: MAX_RAW_CHARS * 4]).decode("utf-8", errors="replace")
    else:
        try:
            text = json.dumps(raw, ensure_ascii=False, default=str)
        except (TypeError, ValueError, RecursionError):
            text = f"<{type(raw).__name__} that cannot be shown as JSON>"
    return _scrub(text[:MAX_RAW_CHARS])


def _product_id_of(raw: Any) -> str | None:
    """The product_id of a raw record as clean text, when it has a usable one."""
    if not isinstance(raw, Mapping):
        return None
    try:
        return clean_text(raw.get("product_id"), MAX_KEY_CHARS["product_id"], "product_id")
    except RecordError:
        return None


def dead_letter(stage: str, reason: Reason | str, error: str, raw: Any,
                product_id: str | None = None, run_id: str | None = None) -> dict[str, Any]:
    """A row of the dead-letter schema (`schemas/dead_letters.json`), writable whatever `raw` holds."""
    return {
        "product_id": _scrub(product_id) if product_id is not None else _product_id_of(raw),
        "stage": stage,
        "reason": reason.value if isinstance(reason, Reason) else str(reason),
        "error": _scrub(error[:10_000]),
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
