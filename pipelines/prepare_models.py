"""`linnet prepare-models`: materialize the default encoders into the models cache (a no-op when present).

`make install` runs it, so a fresh checkout embeds offline; pass the same directory to Dataflow workers
(staged to GCS) through `--models_dir`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from linnet_core.encoders.prepare import prepare_models
from pipelines import defaults
from pipelines.usage import ArgumentParser


def main(argv: list[str] | None = None) -> int:
    """Prepare both encoders under `--models_dir` and print the manifest; returns the exit code."""
    parser = ArgumentParser(prog="linnet prepare-models", description=__doc__)
    parser.add_argument("--models_dir", default=str(defaults.MODELS),
                        help="where the prepared models go (default: $LINNET_CACHE/models)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the models are present")
    args = parser.parse_args(argv)
    # onnxruntime's quantizer logs every tensor at INFO on the root logger; keep only this project's.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("linnet_core").setLevel(logging.INFO)
    print(json.dumps(prepare_models(Path(args.models_dir), force=args.force), indent=2))
    return 0
