"""`linnet train --data DIR --config FILE --output DIR`: train the hierarchical model, write MODEL dir.

Under a TF_CONFIG cluster every worker runs this same command; the chief writes --output.
"""

from __future__ import annotations

import logging
import sys

from linnet_core.calibration.thresholds import ThresholdsError, load_thresholds
from linnet_core.model.config import ConfigError, load_config
from linnet_core.model.data import DataError
from linnet_core.taxonomy import Taxonomy, TaxonomyError
from pipelines import defaults
from pipelines.publish import published_dir
from pipelines.usage import ArgumentParser, UsageError, add_renamed_flag


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="linnet train", description=__doc__)
    parser.add_argument("--data", required=True, help="training-data directory (build-training-data)")
    parser.add_argument("--config", help="model config JSON (default: linnet_core/config/model.json)")
    parser.add_argument("--output", required=True, help="model directory to write")
    parser.add_argument("--taxonomy", default=defaults.TAXONOMY, help="taxonomy-with-ids file")
    add_renamed_flag(parser, parser.add_argument(
        "--calibration", help="calibration.json to bake in (default: thresholds 0.5 per level)"),
        "--thresholds")
    parser.add_argument("--holdout", action="append", default=[], metavar="SPLIT",
                        help="leave this split's stores out of the network and the exemplar memory "
                             "(repeatable; default: none, a production model on every labelled store). "
                             "Held-out reports need it: `--holdout validation` trains the model "
                             "`linnet evaluate` judges")
    parser.add_argument("--shopify_taxonomy", "--shopify-taxonomy", dest="shopify_taxonomy",
                        default=defaults.SHOPIFY_TAXONOMY,
                        help="Shopify taxonomy folder whose GPT mapping the model keeps ('none': no mapping)")
    parser.add_argument("--label-audit", "--label_audit", dest="label_audit", default=None,
                        metavar="AUDIT_DIR",
                        help="a `linnet audit-labels` output: the labels it flags weigh --flagged-weight")
    parser.add_argument("--flagged-weight", "--flagged_weight", dest="flagged_weight", type=float,
                        default=0.0,
                        help="factor on the training weight of audited labels, 0..1 (default 0: dropped)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.flagged_weight <= 1.0:
        raise UsageError(f"--flagged-weight must be in [0, 1], got {args.flagged_weight}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from linnet_core.evaluation.auditing import flagged_products
        from linnet_core.model.train import cluster_from_env, train

        cluster = cluster_from_env()
        config = load_config(args.config)
        taxonomy = Taxonomy.load(args.taxonomy)
        thresholds = load_thresholds(args.calibration) if args.calibration else None
        shopify = None if args.shopify_taxonomy == "none" else args.shopify_taxonomy
        flagged = flagged_products(args.label_audit) if args.label_audit else ()
        train(published_dir(args.data), args.output, config, taxonomy, thresholds, cluster, shopify,
              args.holdout, flagged, args.flagged_weight)
    except (ConfigError, DataError, TaxonomyError, ThresholdsError, OSError) as error:
        print(f"linnet train: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
