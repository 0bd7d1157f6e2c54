"""Choosing where products come from and where tables go, from flags: files or BigQuery.

Every pipeline that reads products or writes partitioned tables goes through these two functions,
so a flag means the same thing in scoring, backfills and training-data builds.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    DirectOptions,
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
)

from pipelines.bigquery import BigQueryConnection, ReadProductsFromBigQuery, WriteBigQueryPartitions
from pipelines.io import ReadProducts, parquet_input_rows
from pipelines.options import OutputOptions, ProductInputOptions
from pipelines.partitions import Partition, WritePartitions


def default_image_root(file_pattern: str) -> str:
    """Relative image paths in files resolve against the (first) input file's folder."""
    first = file_pattern.split(",")[0]
    return FileSystems.split(first)[0] if "://" in first else str(Path(first).parent.resolve())


def product_source(options: PipelineOptions, day: dt.date | None = None, run_id: str | None = None,
                   optional_labels: bool = False) -> beam.PTransform:
    """`ReadProducts` over `--input` files, or BigQuery when `--input_table` or `--query` is given.

    With `day`, only products whose `updated_at` falls on that day (UTC) are read; `run_id` and
    `optional_labels` are `ReadProducts`'.
    """
    flags = options.view_as(ProductInputOptions)
    if flags.input_table or flags.query:
        return ReadProductsFromBigQuery(BigQueryConnection.from_options(options), table=flags.input_table,
                                        query=flags.query, day=day, image_root=flags.image_root,
                                        run_id=run_id, optional_labels=optional_labels)
    return ReadProducts(flags.input, flags.image_root or default_image_root(flags.input), day=day,
                        run_id=run_id, optional_labels=optional_labels)


def embedding_total(options: PipelineOptions) -> int | None:
    """The products a run embeds at most, for the ETA of its progress lines: the `--input` Parquet
    files' rows, when the run is one process (the DirectRunner in memory, as `linnet run-local` runs).
    None for JSONL or BigQuery input, and for several worker processes, which each see only a share."""
    flags = options.view_as(ProductInputOptions)
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    multi_process = options.view_as(DirectOptions).direct_running_mode == "multi_processing"
    if flags.input_table or flags.query or runner not in ("DirectRunner", "direct") or multi_process:
        return None
    return parquet_input_rows(flags.input)


def refuse_bigquery_input(options: PipelineOptions, command: str) -> None:
    """For commands that read product files only: BigQuery input flags are an error, not ignored.

    Raises:
        ValueError: `--input_table` or `--query` was given.
    """
    flags = options.view_as(ProductInputOptions)
    given = [flag for flag, value in (("--input_table", flags.input_table), ("--query", flags.query))
             if value]
    if given:
        raise ValueError(f"linnet {command} reads product files (--input) only; {' and '.join(given)} "
                         f"would be ignored: score or build training data from BigQuery directly")


def table_sinks(options: PipelineOptions, schemas: dict[str, str], partition: Partition,
                run_id: str) -> beam.PTransform:
    """The writer of one partition of several tables (`{table: rows}` in, one manifest per table out):
    `--output` files, every table committed together, or `--output_dataset` BigQuery tables.

    Args:
        schemas: table name → its `schemas/` schema name.

    Raises:
        ValueError: BigQuery output with a run partition (BigQuery tables are partitioned by day) or
            without a temp location.
    """
    flags = options.view_as(OutputOptions)
    if flags.output_dataset:
        if partition.day is None:
            raise ValueError(f"BigQuery output needs a date partition, got {partition.name}")
        temp = options.view_as(GoogleCloudOptions).temp_location or flags.output
        if not temp:
            raise ValueError("BigQuery output needs --temp_location (or --output) for staged files")
        return WriteBigQueryPartitions(BigQueryConnection.from_options(options), flags.output_dataset,
                                       schemas, partition.day, temp, run_id)
    return WritePartitions(flags.output, schemas, partition, run_id)
