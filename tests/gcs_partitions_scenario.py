"""Partition commits, watermark and model staging on gs:// (run by test_partitions in a child process)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from model_dirs import write_stand_in_model

from linnet_core.evaluation.systems import parquet_files
from pipelines import partitions
from pipelines.dataflow_submit import stage_model
from pipelines.embed import local_copy
from pipelines.partitions import Partition, WritePartition
from pipelines.publish import VERSIONS, published, published_dir
from pipelines.watermark import Watermark

ROOT = "gs://linnet-test/out"
DAY = Partition.parse("2026-11-24")


def _write(ids: list[str], fail_on: str | None = None) -> None:
    def maybe_fail(row: dict) -> dict:
        if row["product_id"] == fail_on:
            raise RuntimeError("injected failure")
        return row

    rows = [{"product_id": pid, "title": pid, "updated_at": dt.datetime(2026, 11, 24, tzinfo=dt.UTC)}
            for pid in ids]
    with beam.Pipeline() as pipeline:
        _ = (pipeline | beam.Create(rows) | beam.Map(maybe_fail)
             | WritePartition(ROOT, "products", DAY, run_id="gcs"))


def _visible_ids() -> list[str]:
    ids = []
    for path in partitions.committed_files(partitions.partition_dir(ROOT, "products", DAY)):
        with FileSystems.open(path) as handle:
            ids += pq.read_table(handle).column("product_id").to_pylist()
    return sorted(ids)


def _objects(prefix: str) -> list[str]:
    return sorted(meta.path for meta in FileSystems.match([f"{prefix}/**"])[0].metadata_list)


def _publish(output: str, value: int, fail: bool = False) -> int | None:
    """Publish a folder holding `value` (failing before the end when asked); returns what readers see."""
    try:
        with published(output) as folder:
            with FileSystems.create(f"{folder}/stats.json") as handle:
                handle.write(json.dumps({"value": value}).encode())
            if fail:
                raise RuntimeError("injected failure")
    except RuntimeError:
        pass
    path = f"{published_dir(output)}/stats.json"
    return json.loads(FileSystems.open(path).read())["value"] if FileSystems.exists(path) else None


def main(workdir: str) -> dict:
    _write(["a", "b", "c"])
    first = _visible_ids()
    try:
        _write(["x", "y"], fail_on="y")
        crashed = False
    except Exception:  # noqa: BLE001 - the failure is the scenario
        crashed = True
    after_crash = _visible_ids()
    _write(["b", "d"])
    mark = Watermark(f"{ROOT}/_watermark.json")
    marks = [mark.advance(dt.date(2026, 11, 23)), mark.advance(dt.date(2026, 11, 24))]
    table = f"{ROOT}/products"
    copy = local_copy(table, only=partitions.committed_names(table))  # what `linnet evaluate` reads
    readable = sorted(str(Path(path).relative_to(copy)) for path in parquet_files(copy))
    data = f"{ROOT}/training_data"
    publishes = [_publish(data, 1), _publish(data, 2, fail=True), _publish(data, 3), _publish(data, 4)]
    version = write_stand_in_model(Path(workdir) / "model")
    model = Path(workdir) / "model"
    return {"first": first, "crashed": crashed, "after_crash": after_crash, "second": _visible_ids(),
            "manifest": partitions.read_manifest(partitions.partition_dir(ROOT, "products", DAY)),
            "objects": _objects(f"{ROOT}/products"), "readable": readable,
            "watermark": [str(day) for day in marks],
            "stored_watermark": str(mark.read()), "model_version": version,
            "model_uri": stage_model(str(model), "gs://linnet-test"),
            "model_objects": _objects("gs://linnet-test/models"), "publishes": publishes,
            "published_dir": published_dir(data), "data_objects": _objects(data), "data": data,
            "versions": f"{data}/{VERSIONS}/"}
