"""`ReadProducts` and `linnet import-products`: every input accounted for, bad input as dead letters."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import import_products
from pipelines.io import ReadProducts

pytestmark = pytest.mark.shared_data  # import-products loads the shared taxonomy by default

GOOD = [
    {"product_id": "s1#1", "store": "s1", "title": "Dog bed", "tags": "dogs,beds", "gpt_id": "4434"},
    {"product_id": "s1#2", "store": "s1", "title": "<i>Mug</i>", "description": "Ceramic"},
    {"product_id": "s2#1", "store": "s2", "image_files": ["images/x.jpg"]},
]


def _write_inputs(folder: Path) -> str:
    lines = [json.dumps(record) for record in GOOD]
    lines += [
        "{not json",
        json.dumps({"store": "s3", "title": "no id"}),
        json.dumps({"product_id": "s3#2", "title": "", "tags": ""}),
        json.dumps({"product_id": "s3#3", "title": "x", "updated_at": "soon"}),
        json.dumps([1, 2]),
        "",
    ]
    (folder / "products.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    return f"{folder}/products.jsonl,{folder}/corrupt.parquet"


def test_read_products_routes_every_record(tmp_path: Path) -> None:
    pattern = _write_inputs(tmp_path)
    with TestPipeline() as pipeline:
        outputs = pipeline | ReadProducts(pattern, image_root="/root")
        ids = outputs.records | "Ids" >> beam.Map(lambda record: record["product_id"])
        reasons = outputs.dead_letter | "Reasons" >> beam.Map(lambda row: (row["stage"], row["reason"]))
        assert_that(ids, equal_to(["s1#1", "s1#2", "s2#1"]), label="CheckProducts")
        assert_that(reasons, equal_to([
            ("read", "invalid_json"), ("validate", "missing_product_id"), ("validate", "no_text_or_image"),
            ("validate", "bad_updated_at"), ("validate", "not_an_object"), ("read", "corrupt_file"),
        ]), label="CheckDeadLetters")


def test_import_writes_parquet_and_counts_add_up(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pattern = _write_inputs(tmp_path)
    output = tmp_path / "out"
    summary = import_products.run(["--input", pattern, "--output", str(output), "--image_root", "/imgs"])
    assert summary["records_in"] == 9 == summary["counters"]["linnet:records_read"]
    assert (summary["rows"], summary["dead_letters"], summary["stores"]) == (3, 6, 2)
    assert summary["label_depth"] == {"4": 1, "unlabelled": 2}
    products = pq.read_table(output / "products").to_pylist()
    by_id = {row["product_id"]: row for row in products}
    assert by_id["s1#1"]["tags"] == ["dogs", "beds"]
    assert by_id["s1#2"]["title"] == "Mug"
    assert by_id["s2#1"]["image_uris"] == ["/imgs/images/x.jpg"]
    dead = pq.read_table(output / "dead_letters").to_pylist()
    assert all(row["raw"] and row["error"] for row in dead)
    assert json.loads(capsys.readouterr().out)["rows"] == 3
    rerun = import_products.run(["--input", pattern, "--output", str(output)])
    assert rerun["rows"] == 3, "a rerun replaces the tables instead of adding shards"


def test_bigquery_input_flags_are_refused_not_ignored(tmp_path: Path) -> None:
    for flag in ("--query=SELECT 1", "--input_table=p-123456.shop.products"):
        with pytest.raises(ValueError, match="reads product files"):
            import_products.run([flag, "--output", str(tmp_path)])
    assert not (tmp_path / "products").exists()


@pytest.mark.slow
def test_import_shared_products(tmp_path: Path) -> None:
    summary = import_products.run(["--output", str(tmp_path)])
    assert summary["records_in"] == summary["rows"] == 13405
    assert summary["dead_letters"] == 0
    assert summary["stores"] == 82
    assert sum(summary["label_depth"].values()) == 13405


def _import(folder: Path, name: str, lines: list[bytes], *extra: str) -> dict:
    (folder / name).write_bytes(b"\n".join(lines) + b"\n")
    return import_products.run(["--input", str(folder / name), "--output", str(folder / "out"), *extra])


def test_import_survives_surrogates_and_labels_that_are_no_ids(tmp_path: Path) -> None:
    """Reproductions 1 and 2: lone surrogates, Infinity, 1e20 and 3237.7 as gpt_id."""
    summary = _import(tmp_path, "bad.jsonl", [
        rb'{"product_id": "p1", "title": "A\ud800B"}',
        rb'{"product_id": "p\ud800", "title": "surrogate in the id"}',
        b'{"product_id": "p3", "title": "t", "gpt_id": Infinity}',
        b'{"product_id": "p4", "title": "t", "gpt_id": 100000000000000000000}',
        b'{"product_id": "p5", "title": "t", "gpt_id": 3237.7}',
        b'{"product_id": "p6", "title": "t", "gpt_id": 3237}',
    ], "--run_id", "imp-1")
    assert (summary["records_in"], summary["rows"], summary["dead_letters"]) == (6, 3, 3)
    products = {row["product_id"]: row for row in pq.read_table(tmp_path / "out" / "products").to_pylist()}
    assert sorted(products) == ["p1", "p6", "p?"] and products["p1"]["title"] == "A?B"
    assert products["p6"]["gpt_id"] == 3237
    dead = pq.read_table(tmp_path / "out" / "dead_letters").to_pylist()
    assert sorted((row["product_id"], row["reason"], row["run_id"]) for row in dead) == [
        ("p3", "unknown_label_id", "imp-1"), ("p4", "unknown_label_id", "imp-1"),
        ("p5", "unknown_label_id", "imp-1")]


def test_parquet_fractional_label_is_a_dead_letter(tmp_path: Path) -> None:
    """Reproduction 2: gpt_id 1.5 in Parquet was truncated to 1."""
    import pyarrow as pa

    pq.write_table(pa.table({"product_id": ["a", "b"], "title": ["t", "t"], "gpt_id": [1.5, 4434.0]}),
                   tmp_path / "labels.parquet")
    summary = import_products.run(["--input", str(tmp_path / "labels.parquet"),
                                   "--output", str(tmp_path / "out")])
    assert (summary["rows"], summary["dead_letters_by_reason"]) == (1, {"unknown_label_id": 1})
    assert pq.read_table(tmp_path / "out" / "products").to_pylist()[0]["gpt_id"] == 4434


def test_duplicate_product_ids_become_dead_letters_with_the_run_id(tmp_path: Path) -> None:
    """Reproduction 9: import kept duplicates; read and validate dead letters had run_id null."""
    summary = _import(tmp_path, "dups.jsonl", [
        b'{"product_id": "a", "title": "old", "updated_at": "2026-01-01T00:00:00Z"}',
        b'{"product_id": "a", "title": "new", "updated_at": "2026-02-01T00:00:00Z"}',
        b'{"product_id": "b", "title": "only"}',
        b"{broken",
        b'{"title": "no id"}',
    ], "--run_id", "imp-2")
    assert (summary["records_in"], summary["rows"], summary["dead_letters"]) == (5, 2, 3)
    titles = sorted(row["title"] for row in pq.read_table(tmp_path / "out" / "products").to_pylist())
    assert titles == ["new", "only"]
    dead = pq.read_table(tmp_path / "out" / "dead_letters").to_pylist()
    assert sorted((row["stage"], row["reason"]) for row in dead) == [
        ("dedupe", "duplicate_product_id"), ("read", "invalid_json"), ("validate", "missing_product_id")]
    assert {row["run_id"] for row in dead} == {"imp-2"}


def test_a_corrupt_row_group_accounts_for_every_row(tmp_path: Path) -> None:
    """Reproduction 8: a 3,000-row file with a corrupt third row group counted 2,001 records in."""
    import pyarrow as pa

    path = tmp_path / "three_groups.parquet"
    ids = [f"p{i}" for i in range(3000)]
    pq.write_table(pa.table({"product_id": ids, "title": [f"title {i}" for i in range(3000)]}), path,
                   row_group_size=1000, compression="none")
    column = pq.ParquetFile(path).metadata.row_group(2).column(1)
    offset = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(path.read_bytes())
    data[offset:offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    summary = import_products.run(["--input", str(path), "--output", str(tmp_path / "out")])
    assert (summary["records_in"], summary["rows"], summary["dead_letters"]) == (3000, 2000, 1000)
    dead = pq.read_table(tmp_path / "out" / "dead_letters").to_pylist()
    assert {row["reason"] for row in dead} == {"corrupt_file"}
    assert sorted(json.loads(row["raw"])["row"] for row in dead) == list(range(1000))
