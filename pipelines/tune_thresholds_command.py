"""`linnet tune-thresholds`: per-level temperatures, evidence weights and precision-target thresholds,
fit on a cross-fitted calibration set of unseen stores and baked into MODEL.

Example:
  linnet tune-thresholds --model out/model --data out/training_data --target-precision 0.8
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from linnet_core.calibration.thresholds import (
    DEFAULT_TARGET_PRECISION,
    DELTA,
    ThresholdsError,
    floors_text,
    load_floors,
)
from linnet_core.calibration.tuning import REPORT, calibrate_and_tune
from linnet_core.capped_sample import MAX_PRODUCTS_PER_STORE
from linnet_core.evaluation.report import to_json_safe
from linnet_core.model.data import DataError
from linnet_core.model.export import TAXONOMY_COPY, ModelDirError
from linnet_core.model.predictor import TaxonomyMismatchError
from linnet_core.taxonomy import Taxonomy, TaxonomyError
from linnet_core.training_data import DEFAULT_FOLDS
from pipelines.publish import published_dir
from pipelines.usage import ArgumentParser, add_renamed_flag

FLOORS_COPY = "sensitive_categories.json"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="linnet tune-thresholds", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory (re-exported in place)")
    parser.add_argument("--data", "--training-data", dest="data", required=True,
                        help="training-data directory: the stores the model learnt from are cross-fitted")
    parser.add_argument("--target-precision", type=float, default=DEFAULT_TARGET_PRECISION,
                        help="precision each level must reach, with 95%% confidence (default "
                             f"{DEFAULT_TARGET_PRECISION})")
    parser.add_argument("--sensitive", default=None,
                        help="floors for sensitive subtrees (JSON; default: the package's "
                             "linnet_core/config/sensitive_categories.json); 'none' for no floors")
    parser.add_argument("--per-subtree", action="store_true",
                        help="also raise level-1 subtrees that miss the target under the level thresholds")
    parser.add_argument("--delta", type=float, default=DELTA, help="Clopper–Pearson risk δ (default 0.05)")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS,
                        help="store groups to cross-fit over the stores the model learnt from (a network "
                             "per group); 0 or 1: the model itself on the calibration split only")
    add_renamed_flag(parser, parser.add_argument(
        "--max-products-per-store", type=int, default=MAX_PRODUCTS_PER_STORE,
        help=f"products per store that calibration keeps (default {MAX_PRODUCTS_PER_STORE})"), "--store-cap")
    parser.add_argument("--taxonomy", default=None,
                        help="taxonomy the floors are checked on (default: the model's copy)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        taxonomy = Taxonomy.load(args.taxonomy or Path(args.model, TAXONOMY_COPY))
        floors = {} if args.sensitive == "none" else load_floors(args.sensitive, taxonomy)
        tuned, evidence = calibrate_and_tune(args.model, published_dir(args.data), args.target_precision,
                                             floors, args.per_subtree, args.delta, args.folds,
                                             args.max_products_per_store)
    except (ThresholdsError, TaxonomyError, DataError, ModelDirError, TaxonomyMismatchError,
            OSError, ValueError) as error:
        print(f"linnet tune-thresholds: {error}", file=sys.stderr)
        return 1
    Path(args.model, REPORT).write_text(json.dumps(to_json_safe(evidence), indent=2) + "\n", encoding="utf-8")
    # The floors baked in travel with the model (workers and later retunes need no checkout).
    Path(args.model, FLOORS_COPY).write_text(
        floors_text(args.sensitive) if args.sensitive != "none" else '{"floors": []}\n', encoding="utf-8")
    print(json.dumps(to_json_safe({"thresholds": tuned.to_json(), "levels": evidence["levels"]}), indent=2))
    return 0
