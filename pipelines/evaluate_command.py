"""`linnet evaluate`: metrics.json, report.md and plots for predictions against labels, with baselines.

Examples:
  linnet evaluate --predictions out/scored --labels 'out/held_out/*.parquet' --output out/evaluation \
      --model out/model --training-data out/training_data
  linnet evaluate --model out/model --training-data out/training_data --split validation --output DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from linnet_core.capped_sample import MAX_PRODUCTS_PER_STORE
from linnet_core.evaluation.evaluate import BASELINES, EvaluationConfig, run
from linnet_core.evaluation.report import HP_FLOOR, to_json_safe
from linnet_core.evaluation.systems import EvaluationError
from linnet_core.publish import MANIFEST
from pipelines import defaults
from pipelines.embed import local_copy
from pipelines.partitions import committed_names
from pipelines.publish import published_dir
from pipelines.usage import ArgumentParser, add_renamed_flag

HEADLINE = ("hP", "hR", "hF1", "exact_accuracy", "coverage", "leaf_precision", "aurc", "n", "n_labelled")


def _baselines(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    return () if names == ("none",) else names


def _readable(table: str | None) -> str | None:
    """A table folder on an object store (gs://) as a local copy of its committed partitions (their
    manifests and the files those name, never a commit under way); local paths and globs as given.

    Raises:
        EvaluationError: the remote folder holds no committed partition.
    """
    if table is None or "://" not in table:
        return table
    names = committed_names(table)
    if not names:
        raise EvaluationError(f"no committed partition (no {MANIFEST} manifest) under {table}")
    return local_copy(table, only=names)


def _training_data(folder: str | None) -> str | None:
    return published_dir(folder) if folder else None


def parse_config(argv: list[str] | None) -> EvaluationConfig:
    """Flags → a validated EvaluationConfig (argparse exits with a message on bad flags)."""
    parser = ArgumentParser(prog="linnet evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions",
                        help="categorized table: Parquet glob or directory (gs://: a table folder)")
    parser.add_argument("--labels",
                        help="products table with gpt_id: Parquet glob or directory (gs://: a table folder)")
    parser.add_argument("--taxonomy", default=defaults.TAXONOMY, help="taxonomy-with-ids file")
    parser.add_argument("--output", required=True, help="directory for metrics.json, report.md, plots")
    parser.add_argument("--model", help="model directory (runs the model; needed by the baselines)")
    parser.add_argument("--training-data", "--data", dest="training_data",
                        help="training-data directory (TFRecord splits)")
    parser.add_argument("--split", default="validation", help="split evaluated without --predictions")
    parser.add_argument("--baselines", type=_baselines, default=None,
                        help=f"comma list of {','.join(BASELINES)} or 'none' "
                             "(default: every baseline whose inputs are given)")
    parser.add_argument("--products", default=defaults.PRODUCTS_JSONL,
                        help="product texts for the TF-IDF baseline: JSONL or products Parquet "
                             f"(default {defaults.PRODUCTS_JSONL})")
    parser.add_argument("--hp-floor", type=float, default=HP_FLOOR,
                        help="hierarchical precision at which coverages are compared")
    add_renamed_flag(parser, parser.add_argument(
        "--max-products-per-store", type=int, default=MAX_PRODUCTS_PER_STORE,
        help="also report the headline metrics on at most this many products per store, as the "
             f"acceptance set is capped (default {MAX_PRODUCTS_PER_STORE})"), "--store-cap")
    args = parser.parse_args(argv)
    return EvaluationConfig(taxonomy_file=args.taxonomy, output=args.output,
                            predictions=_readable(args.predictions), labels=_readable(args.labels),
                            model=args.model, training_data=_training_data(args.training_data),
                            split=args.split, baselines=args.baselines, products=args.products,
                            hp_floor=args.hp_floor,
                            max_products_per_store=args.max_products_per_store)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run(parse_config(argv))
    except (ValueError, OSError) as error:  # EvaluationError, TaxonomyError, DataError, ModelDirError, ...
        print(f"linnet evaluate: {error}", file=sys.stderr)
        return 1
    summary = {key: result[key] for key in HEADLINE} | {"comparison": result["comparison"]}
    print(json.dumps(to_json_safe(summary), indent=2))
    return 0
