"""`linnet audit-labels`: rank the training labels a model that never saw their store confidently
disputes (confident learning along the taxonomy), flag stores that disagree with it systematically, and
write the review tables, a report section and its plot.

Example:
  linnet audit-labels --model out/model --data out/training_data --output out/label_audit
  linnet train --data out/training_data --output out/model-audited --label-audit out/label_audit

With `--inject-noise` the labels first get seeded flips (to a sibling, to another level-1 branch) and the
audit is measured on finding them (label_noise.json, label_noise.md).
"""

from __future__ import annotations

import argparse
import json

from linnet_core.training_data import DEFAULT_FOLDS
from pipelines.usage import ArgumentParser, add_renamed_flag


def _rates(text: str) -> tuple[float, float]:
    try:
        sibling, branch = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"SIBLING,BRANCH rates such as 0.05,0.05, got {text!r}") from None
    return sibling, branch


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="linnet audit-labels", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="model directory: its config trains the fold networks; its training splits "
                             "are audited")
    parser.add_argument("--data", "--training-data", dest="data", required=True,
                        help="training-data directory the model was trained on")
    parser.add_argument("--output", required=True,
                        help="directory for label_audit.{parquet,csv,json,md,png} and "
                             "store_branches.{parquet,csv}")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS,
                        help="store folds to cross-fit over (a network per fold; default 5)")
    parser.add_argument("--min-margin", type=float, default=0.0,
                        help="also require the model's node to beat the label's by this path probability")
    parser.add_argument("--inject-noise", type=_rates, default=None, metavar="SIBLING,BRANCH",
                        help="measure the audit: flip these shares of the labels (seeded) first")
    parser.add_argument("--seed", type=int, default=0, help="seed of --inject-noise")
    add_renamed_flag(parser, parser.add_argument(
        "--max-products-per-store", type=int, default=None,
        help="train on and audit at most this many products per store (a sample, for less CPU and "
             "memory; default: every product)"), "--store-cap")
    args = parser.parse_args(argv)
    from linnet_core.evaluation import auditing

    if args.inject_noise:
        found = auditing.measure_noise(args.model, args.data, args.output, args.folds, *args.inject_noise,
                                       seed=args.seed, min_margin=args.min_margin,
                                       max_products_per_store=args.max_products_per_store)
        print(json.dumps(found, indent=2))
        return 0
    audited, taxonomy = auditing.audit_model_data(args.model, args.data, args.folds, args.min_margin,
                                                  max_products_per_store=args.max_products_per_store)
    summary = auditing.write_audit(audited, taxonomy, args.output)
    print(json.dumps({k: v for k, v in summary.items() if k != "examples"}, indent=2))
    return 0
