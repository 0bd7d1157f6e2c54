"""Backfill: one committed partition per day by `updated_at`, watermark semantics, reruns are safe."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow.dataset as ds
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import backfill, partitions
from pipelines.io import PRODUCTS, ReadProducts
from pipelines.partitions import Partition, WritePartition
from pipelines.watermark import AdvanceWatermark, Watermark, WatermarkError

D1, D2, D3 = dt.date(2026, 11, 21), dt.date(2026, 11, 22), dt.date(2026, 11, 23)


def copy_day(day: dt.date, argv: list[str]) -> dict[str, Any]:
    """A small real scoring stand-in: the day's products → partition `date=day` of table `products`,
    then the watermark, as the `ScorePartition` contract asks.

    `--fail_day` makes the run for that day fail after reading, before its commit.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--input")
    parser.add_argument("--output")
    parser.add_argument("--fail_day", type=dt.date.fromisoformat)
    parser.add_argument("--watermark")
    args, beam_argv = parser.parse_known_args(argv)

    def check(record: dict) -> dict:
        if day == args.fail_day:
            raise RuntimeError(f"injected failure on {day}")
        return record

    with beam.Pipeline(options=PipelineOptions(beam_argv)) as pipeline:
        products = (pipeline | "Read" >> ReadProducts(args.input))[PRODUCTS]
        _ = (
            products
            | "OnDay" >> beam.Filter(partitions.updated_on, day)
            | "Check" >> beam.Map(check)
            | "Write" >> WritePartition(args.output, "products", Partition.for_day(day))
            | "AdvanceWatermark" >> AdvanceWatermark(args.watermark, day)
        )
    return partitions.read_manifest(partitions.partition_dir(args.output, "products", Partition.for_day(day)))


@pytest.fixture
def products_file(tmp_path: Path) -> Path:
    rows = [("a", D1), ("b", D1), ("c", D2), ("d", D3), ("e", D3), ("f", D3), ("late", D3 + dt.timedelta(1))]
    path = tmp_path / "products.jsonl"
    path.write_text("".join(
        json.dumps({"product_id": pid, "title": f"Product {pid}", "updated_at": f"{day}T23:59:59Z"}) + "\n"
        for pid, day in rows) + json.dumps({"product_id": "undated", "title": "x"}) + "\n")
    return path


def partitions_on_disk(output: Path) -> dict[str, list[str]]:
    table = ds.dataset(output / "products", format="parquet", partitioning="hive").to_table()
    result: dict[str, list[str]] = {}
    for row in table.select(["date", "product_id"]).to_pylist():
        result.setdefault(str(row["date"]), []).append(row["product_id"])
    return {day: sorted(ids) for day, ids in sorted(result.items())}


def run(products_file: Path, output: Path, *flags: str) -> int:
    return backfill.main([*flags, f"--input={products_file}", f"--output={output}"],
                         score_partition=copy_day, today=D3 + dt.timedelta(days=1))


def test_plan_days():
    today = dt.date(2026, 11, 25)
    assert backfill.plan_days(D1, D3, None, False, today) == [D1, D2, D3]
    assert backfill.plan_days(None, None, D2, True, today) == [D3, dt.date(2026, 11, 24)]
    assert backfill.plan_days(D1, None, None, True, today)[0] == D1
    assert backfill.plan_days(D1, D3, D3, True, today) == []
    for since, until, incremental in ((None, D3, False), (D3, D1, False), (None, None, True)):
        with pytest.raises(ValueError):
            backfill.plan_days(since, until, None, incremental, today)


def test_watermark_moves_one_committed_day_at_a_time(tmp_path: Path):
    mark = Watermark(str(tmp_path / "state" / "wm.json"))
    assert mark.read() is None
    assert mark.advance(D1, "r1") == D1
    assert mark.advance(D3, "r2") == D1  # D2 is not known to be done
    assert mark.advance(D2, "r3") == D2
    assert mark.advance(D1, "r4") == D2  # a rerun of an old day
    assert mark.state()["run_id"] == "r3"
    assert sorted(path.name for path in (tmp_path / "state").iterdir()) == ["wm.json"]
    (tmp_path / "state" / "wm.json").write_text("{not json")
    with pytest.raises(WatermarkError):
        mark.read()


def test_backfill_writes_one_partition_per_day_and_reruns_replace(products_file: Path, tmp_path: Path):
    output = tmp_path / "out"
    assert run(products_file, output, f"--since={D1}", f"--until={D3}") == 0
    expected = {str(D1): ["a", "b"], str(D2): ["c"], str(D3): ["d", "e", "f"]}
    assert partitions_on_disk(output) == expected
    assert Watermark(str(output / backfill.WATERMARK_FILE)).read() == D3

    assert run(products_file, output, f"--since={D2}", f"--until={D2}") == 0
    assert partitions_on_disk(output) == expected
    assert Watermark(str(output / backfill.WATERMARK_FILE)).read() == D3


def test_failed_day_stops_the_backfill_and_incremental_resumes_it(products_file: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture):
    output = tmp_path / "out"
    assert run(products_file, output, f"--since={D1}", "--incremental", f"--fail_day={D2}") == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["failed_day"] == str(D2) and [day["day"] for day in summary["days"]] == [str(D1)]
    assert partitions_on_disk(output) == {str(D1): ["a", "b"]}
    assert Watermark(str(output / backfill.WATERMARK_FILE)).read() == D1

    assert run(products_file, output, "--incremental", "--max_days=1") == 0
    assert Watermark(str(output / backfill.WATERMARK_FILE)).read() == D2
    assert run(products_file, output, "--incremental") == 0
    assert partitions_on_disk(output) == {str(D1): ["a", "b"], str(D2): ["c"], str(D3): ["d", "e", "f"]}
    assert Watermark(str(output / backfill.WATERMARK_FILE)).read() == D3


def test_incremental_needs_a_start(products_file: Path, tmp_path: Path):
    assert run(products_file, tmp_path / "out", "--incremental") == 2


def test_scorer_is_loaded_by_name():
    assert backfill.load_scorer("pipelines.partitions:day_bounds") is partitions.day_bounds


def test_a_job_advances_the_watermark_only_after_its_commits(tmp_path: Path):
    mark = str(tmp_path / "out" / backfill.WATERMARK_FILE)
    Watermark(mark).advance(D1)

    def day_job(day: dt.date, fail: bool) -> None:
        def check(row: dict) -> dict:
            if fail:
                raise RuntimeError("injected failure")
            return row

        with beam.Pipeline() as pipeline:
            rows = pipeline | "Rows" >> beam.Create([{"product_id": "a", "title": "A"}]) | beam.Map(check)
            manifests = (
                (rows | "WriteProducts" >> WritePartition(str(tmp_path / "out"), "products",
                                                          Partition.for_day(day)),
                 rows | "WriteCopy" >> WritePartition(str(tmp_path / "out"), "copy", Partition.for_day(day),
                                                      schema="products"))
                | "Manifests" >> beam.Flatten()
            )
            _ = manifests | "AdvanceWatermark" >> AdvanceWatermark(mark, day, "job-1")

    with pytest.raises(Exception, match="injected failure"):
        day_job(D2, fail=True)
    assert Watermark(mark).read() == D1
    day_job(D2, fail=False)
    assert Watermark(mark).read() == D2
