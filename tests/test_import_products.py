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
from pipelines.io import DEAD_LETTER, PRODUCTS, ReadProducts

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
        ids = outputs[PRODUCTS] | "Ids" >> beam.Map(lambda record: record["product_id"])
        reasons = outputs[DEAD_LETTER] | "Reasons" >> beam.Map(lambda row: (row["stage"], row["reason"]))
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
