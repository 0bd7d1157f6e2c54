"""`linnet score` end to end with injected faults: nothing lost, nothing duplicated, clear reasons."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from linnet_core.features import IMAGE_DIM, TEXT_DIM
from linnet_core.taxonomy import Taxonomy
from pipelines import defaults, score
from pipelines.io import DEAD_LETTER, PRODUCTS

PHOTO = next((defaults.SHARED_DATA / "products" / "images").glob("*.jpg"))


def _faulty_inputs(folder: Path) -> str:
    """Good products plus one of every fault the scoring job must survive."""
    (folder / "not-an-image.jpg").write_text("this is text, not a photo")
    old, new = "2026-11-20T08:00:00Z", "2026-11-22T08:00:00Z"
    lines = [
        json.dumps({"product_id": "good-1", "store": "s1", "title": "Orthopedic dog bed, large"}),
        json.dumps({"product_id": "good-2", "store": "s1", "title": "Ceramic coffee mug 350 ml",
                    "image_uris": [str(PHOTO)]}),
        json.dumps({"product_id": "dup", "store": "s2", "title": "old title", "updated_at": old}),
        json.dumps({"product_id": "dup", "store": "s2", "title": "new title", "updated_at": new}),
        json.dumps({"product_id": None, "title": "null id"}),
        json.dumps({"product_id": "huge", "title": "Wool scarf", "description": "warm " * 2_000_000}),
        json.dumps({"product_id": "bad-image", "title": "Desk lamp",
                    "image_uris": [str(folder / "not-an-image.jpg")]}),
        json.dumps({"product_id": "missing-image", "title": "Garden hose",
                    "image_uris": [str(folder / "nowhere.jpg")]}),
        "{broken json",
    ]
    data = "\n".join(lines).encode() + b'\n{"product_id": "bad-utf8", "title": "Caf\xe9 cr\xff me"}\n'
    (folder / "products.jsonl").write_bytes(data)
    pq.write_table(pa.table({"product_id": ["pq-1"], "title": ["Puzzle 1000 pieces"]}),
                   folder / "more.parquet")
    (folder / "corrupt.parquet").write_bytes(b"PAR1 truncated garbage")
    return ",".join(str(folder / name) for name in ("products.jsonl", "more.parquet", "corrupt.parquet"))


@pytest.mark.slow
def test_score_survives_faults_and_reruns_replace(tmp_path: Path, model_dir: Path) -> None:
    pattern = _faulty_inputs(tmp_path)
    argv = ["--input", pattern, "--model", str(model_dir), "--output", str(tmp_path / "out"),
            "--partition", "2026-11-24", "--embedding_cache", str(tmp_path / "cache")]
    summary = score.run(argv)
    assert summary["balanced"] and summary["rows_in"] == 12
    partition = tmp_path / "out" / "categorized" / "date=2026-11-24"
    rows = pq.read_table(partition).to_pylist()
    ids = [row["product_id"] for row in rows]
    assert sorted(ids) == sorted({"good-1", "good-2", "dup", "huge", "bad-image", "missing-image",
                                  "bad-utf8", "pq-1"})
    dead = pq.read_table(tmp_path / "out" / "dead_letters" / "date=2026-11-24").to_pylist()
    assert sorted(row["reason"] for row in dead) == sorted(
        ["duplicate_product_id", "missing_product_id", "invalid_json", "corrupt_file"])
    superseded = next(row for row in dead if row["reason"] == "duplicate_product_id")
    assert "old title" in superseded["raw"]
    assert summary["images"]["ok"] == 1 and summary["images"]["missing_file"] == 1
    assert summary["images"]["unreadable"] == 1
    for row in rows:
        assert len(row["level_ids"]) == 7 and row["decision"] in ("leaf", "backed_off", "abstained")
        assert row["run_id"] == summary["run_id"]
        assert row["model_version"] == json.loads((model_dir / "model.json").read_text())["model_version"]
        assert (row["gpt_id"] is None) == (row["decision"] == "abstained")
    assert next(r for r in rows if r["product_id"] == "dup")["updated_at"] == dt.datetime(
        2026, 11, 22, 8, tzinfo=dt.UTC)
    rerun = score.run(argv)
    assert rerun["run_id"] != summary["run_id"]
    again = pq.read_table(partition).to_pylist()
    assert sorted(row["product_id"] for row in again) == sorted(ids), "a rerun replaces its partition"
    assert {row["run_id"] for row in again} == {rerun["run_id"]}


def test_deduplicate_keeps_newest() -> None:
    day = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    records = [{"product_id": "a", "title": "old", "updated_at": day},
               {"product_id": "a", "title": "new", "updated_at": day + dt.timedelta(hours=1)},
               {"product_id": "a", "title": "undated", "updated_at": None},
               {"product_id": "b", "title": "only", "updated_at": None}]
    with TestPipeline() as pipeline:
        unique = pipeline | beam.Create(records) | score.DeduplicateProducts()
        assert_that(unique[PRODUCTS] | "Titles" >> beam.Map(lambda r: r["title"]), equal_to(["new", "only"]),
                    label="CheckKept")
        assert_that(unique[DEAD_LETTER] | "Reasons" >> beam.Map(lambda r: (r["product_id"], r["reason"])),
                    equal_to([("a", "duplicate_product_id")] * 2), label="CheckSuperseded")


def test_categorize_routes_a_failing_batch_to_dead_letters(model_dir: Path, gpt: Taxonomy) -> None:
    def embedded(product_id: str, dim: int = TEXT_DIM) -> dict:
        return {"product_id": product_id, "store": "s", "updated_at": None,
                "text_embedding": np.full(dim, 0.05, np.float32),
                "title_embedding": np.full(dim, 0.05, np.float32),
                "image_embedding": np.zeros(IMAGE_DIM, np.float32), "image_present": 0.0}

    lineage = {"taxonomy_version": gpt.version, "thresholds_version": "t", "code_version": "test",
               "run_id": "r", "scored_at": dt.datetime(2026, 11, 25, tzinfo=dt.UTC)}
    categorize = score.Categorize(str(model_dir), lineage, max_batch_size=1)
    with TestPipeline() as pipeline:
        outputs = (pipeline
                   | beam.Create([embedded("ok-1"), embedded("broken", dim=7), embedded("ok-2")])
                   | categorize)
        assert_that(outputs["rows"] | "Ids" >> beam.Map(lambda row: row["product_id"]),
                    equal_to(["ok-1", "ok-2"]), label="CheckRows")
        assert_that(outputs[DEAD_LETTER] | "Dead" >> beam.Map(lambda row: (row["product_id"], row["stage"],
                                                                            row["reason"])),
                    equal_to([("broken", "score", "scoring_failed")]), label="CheckDeadLetters")
