"""`linnet import-products`: merchant JSONL/Parquet → validated products Parquet + dead letters.

Prints a summary (rows, stores, languages, label depth histogram, dead letters) and fails if
records in ≠ records written + dead letters.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from linnet_core.taxonomy import Taxonomy, TaxonomyError
from pipelines.io import DEAD_LETTER, PRODUCTS, ReadProducts, WriteTable
from pipelines.options import OutputOptions, ProductInputOptions, require
from pipelines.progress import beam_counters
from pipelines.sources import default_image_root, refuse_bigquery_input

LOGGER = logging.getLogger(__name__)


def build(pipeline: beam.Pipeline, input_pattern: str, output: str, image_root: str | None) -> None:
    """Adds the import graph to `pipeline`: read, validate, write products and dead letters."""
    products = pipeline | "ReadProducts" >> ReadProducts(input_pattern, image_root)
    _ = products[PRODUCTS] | "WriteProducts" >> WriteTable(f"{output}/products/part", "products")
    _ = products[DEAD_LETTER] | "WriteDeadLetters" >> WriteTable(
        f"{output}/dead_letters/part", "dead_letters", num_shards=1)


def _counter(result: beam.runners.runner.PipelineResult, name: str) -> int:
    counters = result.metrics().query(beam.metrics.MetricsFilter().with_name(name))["counters"]
    return sum(counter.committed or 0 for counter in counters)


def summarize(output: str, taxonomy: Taxonomy | None = None) -> dict:
    """Summary of an import folder: rows, stores, languages, label depths, dead letters by reason."""
    products = pq.read_table(f"{output}/products", columns=["store", "lang", "gpt_id"]).to_pydict()
    dead = pq.read_table(f"{output}/dead_letters", columns=["reason"]).to_pydict()
    depths: Counter = Counter()
    for gpt_id in products["gpt_id"]:
        if gpt_id is None:
            depths["unlabelled"] += 1
        elif taxonomy is not None and gpt_id in taxonomy:
            depths[str(taxonomy.node(gpt_id).depth)] += 1
        else:
            depths["unknown_id"] += 1
    return {
        "rows": len(products["store"]),
        "stores": len(set(products["store"])),
        "languages": dict(Counter(lang or "unknown" for lang in products["lang"]).most_common()),
        "label_depth": dict(sorted(depths.items())),
        "dead_letters": len(dead["reason"]),
        "dead_letters_by_reason": dict(Counter(dead["reason"]).most_common()),
    }


def _clear(output: str) -> None:
    """An import replaces its tables: stale shards of an earlier run must not be read with the new."""
    stale = [f"{output}/{table}" for table in ("products", "dead_letters")]
    existing = [path for path in stale if FileSystems.exists(path)]
    if existing:
        FileSystems.delete(existing)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict:
    """Runs the import and returns (and prints) its summary. Raises RuntimeError if counts disagree."""
    options = PipelineOptions(argv)
    flags, outputs = options.view_as(ProductInputOptions), options.view_as(OutputOptions)
    require(outputs, "output")
    refuse_bigquery_input(options, "import-products")
    image_root = flags.image_root or default_image_root(flags.input)
    _clear(outputs.output)
    pipeline = test_pipeline or beam.Pipeline(options=options)
    build(pipeline, flags.input, outputs.output, image_root)
    result = pipeline.run()
    result.wait_until_finish()
    try:
        taxonomy = Taxonomy.load(flags.taxonomy)
    except (TaxonomyError, OSError) as error:
        LOGGER.warning("label depths not computed: %s", error)
        taxonomy = None
    summary = summarize(outputs.output, taxonomy)
    summary["records_in"] = _counter(result, "records_read")
    summary["counters"] = beam_counters(result)
    Path(outputs.output).mkdir(parents=True, exist_ok=True)
    (Path(outputs.output) / "summary.json").write_text(json.dumps(summary, indent=2))
    json.dump(summary, sys.stdout, indent=2, ensure_ascii=False)
    print()
    if summary["records_in"] != summary["rows"] + summary["dead_letters"]:
        raise RuntimeError(f"records lost: {summary['records_in']} in, {summary['rows']} written, "
                           f"{summary['dead_letters']} dead letters")
    return summary
