"""`linnet cross-validate`: ours and the baselines on the same store folds of every labelled store.

Example:
  linnet cross-validate --data out/training_data --model out/model --output out/crossval

`--model` gives ours' network config and category embeddings (its weights are not used: every fold
trains its own network and exemplar memory on the other folds).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from linnet_core.capped_sample import MAX_PRODUCTS_PER_STORE
from linnet_core.evaluation.crossval import BASELINES, CROSSVAL_MD, TARGETS, run
from linnet_core.training_data import DEFAULT_FOLDS
from pipelines import defaults
from pipelines.publish import published_dir
from pipelines.usage import ArgumentParser, UsageError, add_renamed_flag


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="linnet cross-validate", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="training-data directory (every split is used)")
    parser.add_argument("--model", required=True,
                        help="model directory: config.json, category_embeddings.npz")
    parser.add_argument("--output", required=True,
                        help="directory for crossval.json, crossval.md, crossval.png")
    parser.add_argument("--products", default=defaults.PRODUCTS_JSONL,
                        help="product texts for baseline A: JSONL or products Parquet")
    parser.add_argument("--taxonomy", default=defaults.TAXONOMY, help="taxonomy-with-ids file")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="groups of whole stores")
    add_renamed_flag(parser, parser.add_argument("--max-products-per-store", type=int,
                                                 default=MAX_PRODUCTS_PER_STORE,
                                                 help="evaluated products per store"), "--store-cap")
    parser.add_argument("--target-precision", type=float, default=TARGETS[0],
                        choices=TARGETS, help="ours' default decision")
    parser.add_argument("--baselines", default=",".join(BASELINES),
                        help=f"comma list of {','.join(BASELINES)} (or 'none')")
    parser.add_argument("--label-audit-weight", type=float, default=None, metavar="W",
                        help="train ours on audited labels: in each fold the other folds' labels are audited "
                             "among themselves and the flagged ones weigh W (0..1; default: no audit)")
    parser.add_argument("--capped-training", action="store_true",
                        help="fold networks learn from the store-capped products only (a CPU-bound run's "
                             "sample; baselines still learn from every product)")
    args = parser.parse_args(argv)
    if args.label_audit_weight is not None and not 0.0 <= args.label_audit_weight <= 1.0:
        raise UsageError(f"--label-audit-weight must be in [0, 1], got {args.label_audit_weight}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from linnet_core.evaluation.baselines import product_texts
    from linnet_core.taxonomy import Taxonomy

    baselines = () if args.baselines == "none" else tuple(b for b in args.baselines.split(",") if b)
    unknown = set(baselines) - set(BASELINES)
    if unknown:
        raise UsageError(f"unknown baselines {sorted(unknown)}; choose from {','.join(BASELINES)}")
    texts = product_texts(args.products) if baselines else {}
    result = run(published_dir(args.data), texts, Taxonomy.load(args.taxonomy), args.output, args.model,
                 args.folds, args.max_products_per_store, args.target_precision, baselines,
                 progress=lambda line: print(f"[cross-validate] {line}", flush=True),
                 flagged_weight=args.label_audit_weight, capped_training=args.capped_training)
    print(open(f"{args.output}/{CROSSVAL_MD}", encoding="utf-8").read())
    print(json.dumps({name: entry["summary"]["hF1"] for name, entry in result["systems"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
