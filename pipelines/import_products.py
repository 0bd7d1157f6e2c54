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

from linnet_core.taxonomy import Taxonomy
from pipelines.counters import Accounting, beam_counters, records_in
from pipelines.io import PRODUCTS, DeduplicateProducts
from pipelines.options import OutputOptions, ProductInputOptions, pipeline_options, require
from pipelines.partitions import WritePartitions, new_attempt
from pipelines.sources import product_source, refuse_bigquery_input

LOGGER = logging.getLogger(__name__)
DEAD_LETTERS = "dead_letters"
SUMMARY = "summary.json"


def build(pipeline: beam.Pipeline, read: beam.PTransform, output: str, run_id: str | None = None) -> None:
    """Adds the import graph to `pipeline`: read (`sources.product_source`), validate, deduplicate, then
    replace the products and dead-letter tables of `output` together (`WritePartitions`: a failed run
    leaves the old ones)."""
    read = pipeline | "ReadProducts" >> read
    unique = read.records | "DeduplicateProducts" >> DeduplicateProducts(run_id)
    dead = (read.dead_letter, unique.dead_letter) | "MergeDeadLetters" >> beam.Flatten()
    _ = ({PRODUCTS: unique.records, DEAD_LETTERS: dead}
         | "WriteTables" >> WritePartitions(output, {PRODUCTS: "products", DEAD_LETTERS: "dead_letters"},
                                            None, run_id))


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


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict:
    """Runs the import and returns (and prints) its summary. Raises RecordsLostError if counts disagree."""
    options = pipeline_options(argv, "linnet import-products", ProductInputOptions, OutputOptions,
                               description=__doc__)
    flags, outputs = options.view_as(ProductInputOptions), options.view_as(OutputOptions)
    require(outputs, "output")
    refuse_bigquery_input(options, "import-products")
    run_id = outputs.run_id or new_attempt()
    taxonomy = Taxonomy.load(flags.taxonomy)  # a bad taxonomy fails before any work, not after it
    pipeline = test_pipeline or beam.Pipeline(options=options)
    build(pipeline, product_source(options, run_id=run_id), outputs.output, run_id)
    # The summary marks a finished import (run-local reuses it): it goes before the tables change
    # and comes back after they are committed, so it never describes tables it does not match.
    summary_path = Path(outputs.output) / SUMMARY
    summary_path.unlink(missing_ok=True)
    result = pipeline.run()
    result.wait_until_finish()
    summary = {"run_id": run_id, **summarize(outputs.output, taxonomy)}
    summary["records_in"] = records_in(result)
    summary["counters"] = beam_counters(result)
    json.dump(summary, sys.stdout, indent=2, ensure_ascii=False)
    print()
    Accounting(summary["records_in"], summary["rows"], summary["dead_letters"]).check(f"run {run_id}")
    temporary = summary_path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(summary, indent=2))
    temporary.replace(summary_path)
    return summary
