"""`linnet tune-thresholds`: per-level temperatures, evidence weights and precision-target thresholds,
fit on a cross-fitted calibration set of unseen stores and baked into MODEL.

Example:
  linnet tune-thresholds --model out/model --data out/training_data --target-precision 0.9
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from linnet_core.evaluation.report import to_json_safe
from linnet_core.evaluation.tuning import REPORT, calibrate_and_tune
from linnet_core.model.data import DataError
from linnet_core.model.export import ModelDirError
from linnet_core.model.predictor import TaxonomyMismatchError
from linnet_core.store_cap import STORE_CAP
from linnet_core.taxonomy import Taxonomy, TaxonomyError
from linnet_core.thresholds import DELTA, ThresholdsError, load_floors
from linnet_core.training_data import DEFAULT_FOLDS
from pipelines import defaults
from pipelines.usage import ArgumentParser

DEFAULT_SENSITIVE = str(defaults.PROJECT_ROOT / "config" / "sensitive_categories.json")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="linnet tune-thresholds", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory (re-exported in place)")
    parser.add_argument("--data", "--training-data", dest="data", required=True,
                        help="training-data directory: its train and calibration stores are cross-fitted")
    parser.add_argument("--target-precision", type=float, default=0.9,
                        help="precision each level must reach, with 95%% confidence (default 0.9)")
    parser.add_argument("--sensitive", default=DEFAULT_SENSITIVE,
                        help="floors for sensitive subtrees (JSON); 'none' for no floors")
    parser.add_argument("--per-subtree", action="store_true",
                        help="also raise level-1 subtrees that miss the target under the level thresholds")
    parser.add_argument("--delta", type=float, default=DELTA, help="Clopper–Pearson risk δ (default 0.05)")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS,
                        help="store groups to cross-fit over the train and calibration stores (a network "
                             "per group); 0 or 1: the model itself on the calibration split only")
    parser.add_argument("--store-cap", type=int, default=STORE_CAP,
                        help="products per store that calibration keeps (default 150)")
    parser.add_argument("--taxonomy", default=defaults.TAXONOMY, help="taxonomy the floors are checked on")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        floors = ({} if args.sensitive == "none"
                  else load_floors(args.sensitive, Taxonomy.load(args.taxonomy)))
        tuned, evidence = calibrate_and_tune(args.model, args.data, args.target_precision, floors,
                                             args.per_subtree, args.delta, args.folds, args.store_cap)
    except (ThresholdsError, TaxonomyError, DataError, ModelDirError, TaxonomyMismatchError,
            OSError, ValueError) as error:
        print(f"linnet tune-thresholds: {error}", file=sys.stderr)
        return 1
    Path(args.model, REPORT).write_text(json.dumps(to_json_safe(evidence), indent=2) + "\n", encoding="utf-8")
    print(json.dumps(to_json_safe({"thresholds": tuned.to_json(), "levels": evidence["levels"]}), indent=2))
    return 0
