"""Property-based fuzzing of the record path: whatever a JSONL line or a Parquet row holds (random
types, lone surrogates, NaN/Infinity, huge numbers, deep nesting, huge strings, invalid UTF-8), the
readers give exactly one writable record or one writable dead letter per record in, and the
`import-products` and `score` runs finish with records in = rows out + dead letters.

Most cases go straight through the functions the pipelines call (`records.validate`,
`io.read_product_file`); a few fuzzed batches go through the whole pipelines.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from linnet_core.records import Reason, RecordError, normalize, validate
from pipelines import import_products, score
from pipelines.io import read_product_file, to_row

FIELDS = ("product_id", "store", "title", "description", "vendor", "product_type", "collections", "tags",
          "options", "image_uris", "image_files", "lang", "updated_at", "gpt_id", "gpt_path",
          "shopify_category_id")
HUGE = ["x" * 1_100_000, "<p>" * 300_000, "\ud800" * 200_000, "a," * 500_000, "9" * 4_000]
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

chars = st.one_of(st.characters(),
                  st.sampled_from(["\ud800", "\udfff", "\x00", "<", ">", "&", ",", "\ufffd"]))
texts = st.one_of(st.text(chars, max_size=40), st.sampled_from(["", " ", "<b></b>", "&amp;", "2026-11-24"]),
                  st.sampled_from(HUGE))
numbers = st.one_of(st.integers(), st.integers(min_value=-(2**80), max_value=2**80),
                    st.sampled_from([0, -1, 2**63 - 1, 2**63, 10**20, 3237, 4434]),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([3237.7, 1.5, 1e300, -0.0]))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                      | st.dictionaries(st.text(chars, max_size=8), children, max_size=4), max_leaves=12)
ids = st.one_of(st.text(chars, min_size=1, max_size=20), values)
raw_records = st.fixed_dictionaries({"product_id": ids}, optional={field: values for field in FIELDS[1:]})


def deep_title(depth: int) -> bytes:
    """A valid JSON object line whose title nests `depth` lists deep."""
    return b'{"product_id": "p", "title": ' + b"[" * depth + b'"leaf"' + b"]" * depth + b"}"


def assert_writable(row: dict[str, Any], table: str) -> None:
    pa.Table.from_pylist([to_row(row, table)], schema=schemas.arrow_schema(table))


def assert_checked(record: dict | None, dead: dict | None) -> None:
    """Exactly one of the two, and it can be written to its table."""
    assert (record is None) != (dead is None)
    if record is not None:
        assert_writable(record, "products")
    else:
        assert dead["reason"] != Reason.UNEXPECTED, dead["error"]
        assert_writable(dead, "dead_letters")


@settings(FAST, max_examples=300)
@given(raw=raw_records, ascii_escapes=st.booleans(), optional_labels=st.booleans())
def test_any_json_object_line_is_a_record_or_a_dead_letter(raw: dict, ascii_escapes: bool,
                                                           optional_labels: bool) -> None:
    line = json.dumps(raw, ensure_ascii=ascii_escapes, allow_nan=True).encode("utf-8", "surrogatepass")
    assert_checked(*validate(line, "/images", "run-1", optional_labels))
    try:
        normalize(raw, "/images", optional_labels)
    except RecordError:
        pass


@settings(FAST, max_examples=100)
@given(line=st.one_of(st.binary(max_size=200), st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
                      st.integers(1, 100_000).map(lambda n: b'{"a":' * n),
                      values.map(lambda v: json.dumps(v, allow_nan=True).encode("utf-8", "surrogatepass")),
                      st.integers(100, 3000).map(deep_title)))
def test_any_line_of_bytes_is_a_record_or_a_dead_letter(line: bytes) -> None:
    assert_checked(*validate(line, run_id="run-1"))


timestamps = st.one_of(st.none(), st.datetimes(timezones=st.none() | st.timezones()))
parquet_columns = st.fixed_dictionaries({"product_id": st.lists(st.text(max_size=10) | st.none(), min_size=3,
                                                                 max_size=3)}, optional={
    "title": st.lists(st.binary(max_size=20) | st.none(), min_size=3, max_size=3),
    "tags": st.lists(st.lists(st.text(max_size=5) | st.none(), max_size=3) | st.none(),
                     min_size=3, max_size=3),
    "gpt_id": st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.none(), min_size=3, max_size=3),
    "store": st.lists(st.integers(-(2**63), 2**63 - 1) | st.none(), min_size=3, max_size=3),
    "updated_at": st.lists(timestamps, min_size=3, max_size=3),
    "options": st.lists(st.fixed_dictionaries({"name": st.text(max_size=5)}) | st.none(), min_size=3,
                        max_size=3),
})


def parquet_bytes(columns: dict[str, list]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({name: pa.array(column) for name, column in columns.items()}), sink,
                   row_group_size=2)
    return sink.getvalue()


@settings(FAST, max_examples=120)
@given(columns=parquet_columns)
def test_any_parquet_row_is_a_record_or_a_dead_letter(columns: dict[str, list]) -> None:
    data = parquet_bytes(columns)
    checked = list(read_product_file(lambda: io.BytesIO(data), "fuzz.parquet", None, "run-1"))
    assert len(checked) == 3, "one output per row"
    for record, dead in checked:
        assert_checked(record, dead)


def write_inputs(folder: Path, records: list[dict], columns: dict[str, list]) -> tuple[str, int]:
    lines = [json.dumps(raw, allow_nan=True).encode("utf-8", "surrogatepass") for raw in records]
    (folder / "fuzz.jsonl").write_bytes(b"\n".join([*lines, b"{broken", b"[" * 5000]) + b"\n")
    (folder / "fuzz.parquet").write_bytes(parquet_bytes(columns))
    return f"{folder / 'fuzz.jsonl'},{folder / 'fuzz.parquet'}", len(lines) + 2 + 3


@pytest.mark.shared_data  # import-products loads the shared taxonomy
@settings(FAST, max_examples=3)
@given(records=st.lists(raw_records, min_size=5, max_size=25), columns=parquet_columns)
def test_fuzzed_import_accounts_for_every_record(records: list[dict], columns: dict[str, list]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        pattern, count = write_inputs(Path(folder), records, columns)
        summary = import_products.run(["--input", pattern, "--output", f"{folder}/out"])
    assert summary["records_in"] == count == summary["rows"] + summary["dead_letters"]


@pytest.mark.slow
@pytest.mark.encoders
def test_fuzzed_score_accounts_for_every_record(model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    @settings(FAST, max_examples=1)
    @given(records=st.lists(raw_records, min_size=20, max_size=30), columns=parquet_columns)
    def score_once(records: list[dict], columns: dict[str, list]) -> None:
        folder = tmp_path_factory.mktemp("fuzz_score")
        pattern, count = write_inputs(folder, records, columns)
        summary = score.run(["--input", pattern, "--model", str(model_dir), "--output", str(folder / "out"),
                             "--partition", "run=fuzz", "--embedding_cache", "none"])
        assert summary["balanced"] and summary["rows_in"] == count

    score_once()
