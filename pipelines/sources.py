"""Choosing where products come from and where tables go, from flags: files or BigQuery.

Every pipeline that reads products or writes partitioned tables goes through these two functions,
so a flag means the same thing in scoring, backfills and training-data builds.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from pipelines.bigquery import BigQueryConnection, ReadProductsFromBigQuery, WriteBigQueryPartition
from pipelines.io import ReadProducts
from pipelines.options import OutputOptions, ProductInputOptions
from pipelines.partitions import Partition, WritePartition


def default_image_root(file_pattern: str) -> str:
    """Relative image paths in files resolve against the (first) input file's folder."""
    first = file_pattern.split(",")[0]
    return str(Path(first).parent) if "://" in first else str(Path(first).parent.resolve())


def product_source(options: PipelineOptions, day: dt.date | None = None) -> beam.PTransform:
    """`ReadProducts` over `--input` files, or BigQuery when `--input_table` or `--query` is given.

    With `day`, only products whose `updated_at` falls on that day (UTC) are read.
    """
    flags = options.view_as(ProductInputOptions)
    if flags.input_table or flags.query:
        return ReadProductsFromBigQuery(BigQueryConnection.from_options(options), table=flags.input_table,
                                        query=flags.query, day=day, image_root=flags.image_root)
    return ReadProducts(flags.input, flags.image_root or default_image_root(flags.input), day=day)


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


def table_sink(options: PipelineOptions, table: str, schema: str, partition: Partition,
               run_id: str) -> beam.PTransform:
    """The partition writer of one table: `--output` files, or `--output_dataset` BigQuery tables.

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
        return WriteBigQueryPartition(BigQueryConnection.from_options(options),
                                      f"{flags.output_dataset}.{table}", schema, partition.day, temp, run_id)
    return WritePartition(flags.output, table, partition, run_id, schema=schema)
