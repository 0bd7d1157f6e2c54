"""Progress lines of long work: at most one per interval, with rate and, given a total, ETA."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from linnet_core.progress import Progress
from pipelines.sources import embedding_total


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_per_interval_with_rate_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    progress = Progress("embedding", total=1000, unit="products", interval_s=30.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="linnet_core.progress"):
        for _ in range(10):  # 100 products per 10 s
            clock.now += 10.0
            progress.update(100)
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "embedding: 300/1,000 products, 10/s, 0m30s elapsed, ETA 1m10s"
    assert len(lines) == 4 and lines[-1].startswith("embedding: 1,000/1,000 products")
    assert lines[-1].endswith("ETA 0m00s")


def test_without_a_total_there_is_no_eta_and_shared_is_one_per_name() -> None:
    clock = Clock()
    progress = Progress("reading", clock=clock)
    clock.now = 7200.0
    progress.update(36_000)
    assert progress.line() == "reading: 36,000 items, 5/s, 2h00m elapsed"
    assert Progress.shared("x-test") is Progress.shared("x-test")


def test_the_embedding_total_is_known_for_parquet_input_in_one_process(tmp_path: Path) -> None:
    """The ETA of embedding needs the run's product count: Parquet footers give it; a JSONL file or
    several worker processes (each seeing a share) give none."""
    pq.write_table(pa.table({"product_id": ["a", "b", "c"]}), tmp_path / "p-1.parquet")
    pq.write_table(pa.table({"product_id": ["d"]}), tmp_path / "p-2.parquet")
    (tmp_path / "more.jsonl").write_text('{"product_id": "e"}\n')

    def total(*flags: str) -> int | None:
        return embedding_total(PipelineOptions(list(flags)))

    assert total(f"--input={tmp_path}/*.parquet") == 4
    assert total(f"--input={tmp_path}/*.parquet", "--direct_running_mode=multi_processing") is None
    assert total(f"--input={tmp_path}/p-1.parquet,{tmp_path}/more.jsonl") is None
