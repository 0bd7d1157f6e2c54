"""Backfill: one committed partition per day by `updated_at`, watermark semantics, reruns are safe."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import apache_beam as beam
import pyarrow.dataset as ds
import pytest

from linnet_core import decisions
from pipelines import backfill, partitions, score
from pipelines.partitions import Partition, WritePartition
from pipelines.watermark import AdvanceWatermark, Watermark, WatermarkError

D1, D2, D3 = dt.date(2026, 11, 21), dt.date(2026, 11, 22), dt.date(2026, 11, 23)
PRODUCTS = [("a", D1), ("b", D1), ("c", D2), ("d", D3), ("e", D3), ("f", D3), ("late", D3 + dt.timedelta(1))]


def write_products(path: Path, products: list[tuple[str, dt.date]], title: str = "Product") -> Path:
    """Products updated on the given days, plus one without `updated_at` (in no day's partition)."""
    path.write_text("".join(
        json.dumps({"product_id": pid, "store": "s1", "title": f"{title} {pid}",
                    "updated_at": f"{day}T23:59:59Z"}) + "\n"
        for pid, day in products) + json.dumps({"product_id": "undated", "title": "x"}) + "\n")
    return path


def categorized_rows(output: Path) -> list[dict]:
    """The committed rows of the `categorized` table, with their partition's `date`."""
    table = ds.dataset(output / score.CATEGORIZED, format="parquet", partitioning="hive").to_table()
    return table.to_pylist()


def scored_on_disk(output: Path) -> dict[str, list[tuple[str, str]]]:
    """(product_id, run_id) of each committed `categorized` row, by partition day."""
    result: dict[str, list[tuple[str, str]]] = {}
    for row in categorized_rows(output):
        result.setdefault(str(row["date"]), []).append((row["product_id"], row["run_id"]))
    return {day: sorted(rows) for day, rows in sorted(result.items())}


def failing_on(day: dt.date) -> Callable[..., dict]:
    """`score.prediction_row`, raising for the products updated on `day`: that day's scoring job fails
    after reading and inference, before its commit."""
    real = score.prediction_row

    def prediction_row(example: dict, *args: object) -> dict:
        if example["updated_at"].date() == day:
            raise RuntimeError(f"injected failure on {day}")
        return real(example, *args)

    return prediction_row


def last_json(text: str) -> dict:
    """The last JSON document of `text`: backfill's summary, printed after each day's run summary."""
    decoder, position, document = json.JSONDecoder(), 0, {}
    text = text.strip()
    while position < len(text):
        document, position = decoder.raw_decode(text, position)
        position = len(text) - len(text[position:].lstrip())
    return document


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


def test_backfill_scores_each_day_into_its_partition_resumes_a_failed_day_and_reruns_replace(
        tmp_path: Path, model_dir: Path, models_dir: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture):
    """The real scorer (`pipelines.score:score_partition`, the default) with a small trained model: each
    day's products become that day's `categorized` partition; a day whose job fails stops the backfill
    with nothing of it committed and the watermark on the day before; `--incremental` resumes there
    (`--max_days` days at most); rerunning a day replaces its partition and leaves the others and the
    watermark alone."""
    products = write_products(tmp_path / "products.jsonl", PRODUCTS)
    output = tmp_path / "out"
    watermark = Watermark(str(output / backfill.WATERMARK_FILE))

    def run(*flags: str) -> dict:
        code = backfill.main([*flags, f"--input={products}", f"--output={output}", f"--model={model_dir}",
                              f"--models_dir={models_dir}", f"--embedding_cache={tmp_path / 'cache'}"],
                             today=D3 + dt.timedelta(days=1))
        return {"code": code, **last_json(capsys.readouterr().out)}

    def ids(scored: dict[str, list[tuple[str, str]]]) -> dict[str, list[str]]:
        return {day: [product_id for product_id, _ in rows] for day, rows in scored.items()}

    with monkeypatch.context() as patch:
        patch.setattr(score, "prediction_row", failing_on(D2))
        failed = run(f"--since={D1}", f"--until={D3}")
    assert failed["code"] == 1 and failed["failed_day"] == str(D2)
    assert [day["day"] for day in failed["days"]] == [str(D1)]
    first = scored_on_disk(output)
    assert ids(first) == {str(D1): ["a", "b"]}
    assert watermark.read() == D1

    assert run("--incremental", "--max_days=1")["code"] == 0
    resumed = scored_on_disk(output)
    assert ids(resumed) == {str(D1): ["a", "b"], str(D2): ["c"]}
    assert resumed[str(D1)] == first[str(D1)], "a resumed backfill does not score a committed day again"
    assert watermark.read() == D2

    write_products(products, [*PRODUCTS, ("a2", D1)], title="Changed")
    rerun = run(f"--since={D1}", f"--until={D1}")
    assert rerun["code"] == 0 and rerun["days"][0]["manifest"]["rows_out"] == 3
    after = scored_on_disk(output)
    assert ids(after) == {str(D1): ["a", "a2", "b"], str(D2): ["c"]}
    assert after[str(D2)] == resumed[str(D2)]
    assert len({run_id for rows in after.values() for _, run_id in rows}) == 2, "one scoring run per day"
    assert watermark.read() == D2
    version = json.loads((model_dir / "model.json").read_text())["model_version"]
    rows = categorized_rows(output)
    assert {row["model_version"] for row in rows} == {version}
    assert {row["decision"] for row in rows} <= set(decisions.NAMES)


def test_incremental_needs_a_start(tmp_path: Path):
    def never(day: dt.date, argv: list[str]) -> dict:
        raise AssertionError(f"scored {day} without a start")

    assert backfill.main(["--incremental", f"--output={tmp_path / 'out'}"], score_partition=never) == 2


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
