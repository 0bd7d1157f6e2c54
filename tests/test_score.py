"""`linnet score` end to end with injected faults: nothing lost, nothing duplicated, clear reasons."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
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

pytestmark = pytest.mark.shared_data
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
@pytest.mark.encoders
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
        assert_that(unique.records | "Titles" >> beam.Map(lambda r: r["title"]), equal_to(["new", "only"]),
                    label="CheckKept")
        assert_that(unique.dead_letter | "Reasons" >> beam.Map(lambda r: (r["product_id"], r["reason"])),
                    equal_to([("a", "duplicate_product_id")] * 2), label="CheckSuperseded")


def test_categorize_routes_a_failing_batch_to_dead_letters(model_dir: Path, gpt: Taxonomy) -> None:
    def embedded(product_id: str, dim: int = TEXT_DIM) -> dict:
        return {"product_id": product_id, "store": "s", "updated_at": None,
                "text_embedding": np.full(dim, 0.05, np.float32),
                "title_embedding": np.full(dim, 0.05, np.float32),
                "image_embedding": np.zeros(IMAGE_DIM, np.float32), "image_present": 0.0}

    lineage = {"taxonomy_version": gpt.version, "thresholds_version": "t", "code_version": "test",
               "run_id": "r"}
    categorize = score.Categorize(str(model_dir), lineage, max_batch_size=1)
    started = dt.datetime.now(dt.UTC)

    def scored_during_the_run(row: dict) -> bool:
        return started <= row["scored_at"] <= dt.datetime.now(dt.UTC)

    with TestPipeline() as pipeline:
        outputs = (pipeline
                   | beam.Create([embedded("ok-1"), embedded("broken", dim=7), embedded("ok-2")])
                   | categorize)
        assert_that(outputs.records | "Ids" >> beam.Map(lambda row: row["product_id"]),
                    equal_to(["ok-1", "ok-2"]), label="CheckRows")
        assert_that(outputs.records | "ScoredAt" >> beam.Map(scored_during_the_run), equal_to([True, True]),
                    label="CheckScoredAt")
        assert_that(outputs.dead_letter | "Dead" >> beam.Map(lambda row: (row["product_id"], row["stage"],
                                                                            row["reason"])),
                    equal_to([("broken", "score", "scoring_failed")]), label="CheckDeadLetters")


@pytest.mark.encoders
def test_score_scores_products_whose_text_or_label_is_broken(tmp_path: Path, model_dir: Path) -> None:
    """Reproductions 1, 2 and 9: a lone surrogate (in a title or a product_id) and a gpt_id of
    Infinity, 1e20 or 3237.7 crashed `score`; a bad optional label made a dead letter. All are scored."""
    lines = [rb'{"product_id": "p1", "title": "Dog bed A\ud800B"}',
             rb'{"product_id": "p\ud800", "title": "Coffee mug"}',
             b'{"product_id": "p3", "title": "Garden hose", "gpt_id": Infinity}',
             b'{"product_id": "p4", "title": "Desk lamp", "gpt_id": 100000000000000000000}',
             b'{"product_id": "p5", "title": "Wool scarf", "gpt_id": 3237.7}']
    (tmp_path / "broken.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    summary = score.run(["--input", str(tmp_path / "broken.jsonl"), "--model", str(model_dir),
                         "--output", str(tmp_path / "out"), "--partition", "run=broken",
                         "--embedding_cache", "none"])
    assert (summary["rows_in"], summary["rows_out"], summary["dead_letters"]) == (5, 5, 0)
    rows = pq.read_table(tmp_path / "out" / "categorized" / "run=broken").to_pylist()
    assert sorted(row["product_id"] for row in rows) == ["p1", "p3", "p4", "p5", "p?"]


@pytest.mark.slow
@pytest.mark.encoders
@pytest.mark.subprocesses
def test_two_concurrent_score_runs_leave_one_whole_partition(tmp_path: Path, model_dir: Path) -> None:
    """Reproduction 3: two `linnet score` runs on one --output and --partition, half a second apart,
    deleted each other's staged files; once both tables were committed empty."""
    products = [{"product_id": f"p{i}", "store": "s", "title": f"Product number {i}"} for i in range(12)]
    (tmp_path / "products.jsonl").write_text("\n".join(json.dumps(p) for p in products) + "\n{broken\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    runs = []
    for run_id in ("run-a", "run-b"):  # stderr to files: a full pipe would block a run holding the lock
        log = tmp_path / f"{run_id}.log"
        with log.open("w") as stderr:
            runs.append((log, subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli", "score", "--input", str(tmp_path / "products.jsonl"),
                 "--model", str(model_dir), "--output", str(tmp_path / "out"), "--partition", "2026-11-24",
                 "--run_id", run_id, "--embedding_cache", "none"], env=env, stdout=subprocess.DEVNULL,
                stderr=stderr)))
        time.sleep(0.5)
    for log, process in runs:
        assert process.wait(timeout=900) == 0, log.read_text()[-3000:]
    tables = {table: pq.read_table(tmp_path / "out" / table / "date=2026-11-24").to_pylist()
              for table in ("categorized", "dead_letters")}
    scored = sorted(row["product_id"] for row in tables["categorized"])
    assert scored == sorted(product["product_id"] for product in products)
    assert [row["reason"] for row in tables["dead_letters"]] == ["invalid_json"]
    assert len({row["run_id"] for rows in tables.values() for row in rows}) == 1, "one run, not a mix"
