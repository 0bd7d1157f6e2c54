"""`linnet run-local`: the whole job on the DirectRunner over the shared data, reusing what exists.

import products → build training data → train (once) → tune thresholds → score the held-out stores
→ evaluate against their labels. Each stage runs as its own `linnet` process, exactly as a user or
scheduler would run it; finished stages are reused (delete `out/` or pass `--fresh` to redo them).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

from linnet_core.calibration.thresholds import DEFAULT_TARGET_PRECISION
from linnet_core.model import MODEL_JSON
from pipelines import defaults
from pipelines.usage import ArgumentParser

LOGGER = logging.getLogger(__name__)
HELD_OUT_SPLIT = "validation"


def _stage(name: str, done: Path | None, argv: list[str]) -> None:
    if done is not None and done.exists():
        print(f"[run-local] {name}: reusing {done}", flush=True)
        return
    print(f"[run-local] {name}: linnet {' '.join(argv)}", flush=True)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "pipelines.cli", *argv], check=True)
    print(f"[run-local] {name}: done in {time.monotonic() - started:.0f} s", flush=True)


def held_out_products(products_dir: Path, training_data: Path, output: Path) -> Path:
    """Write the products of the held-out split's stores (by the training data's split rule)."""
    import json

    import pyarrow.parquet as pq

    from linnet_core.training_data import SplitConfig, assign_split

    split = json.loads((training_data / "stats.json").read_text())["split"]
    config = SplitConfig(tuple(split["fractions"]), tuple(split["by"]))
    table = pq.read_table(products_dir / "products")
    mask = [assign_split(row, config) == HELD_OUT_SPLIT for row in table.to_pylist()]
    output.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.filter(mask), output / "products.parquet")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="linnet run-local", description=__doc__)
    parser.add_argument("--input", default=defaults.PRODUCTS_JSONL, help="labelled products (JSONL)")
    parser.add_argument("--output", default=str(defaults.OUTPUT), help="where every stage writes")
    parser.add_argument("--sample", type=int, default=0,
                        help="use only the first N products per pass (0 = the full set)")
    parser.add_argument("--fresh", action="store_true", help="redo every stage")
    parser.add_argument("--target-precision", type=float, default=DEFAULT_TARGET_PRECISION,
                        help="precision the thresholds are certified for on cross-fitted unseen stores; "
                             "on the shared data targets hold up to ~0.8, the labels' noise caps more")
    args = parser.parse_args(argv)
    out = Path(args.output)
    if args.fresh and out.exists():
        import shutil

        shutil.rmtree(out)
    sample = ["--sample", str(args.sample)] if args.sample else []
    products, data, model = out / "products", out / "training_data", out / "model"
    _stage("import", products / "summary.json",
           ["import-products", "--input", args.input, "--output", str(products)])
    _stage("training data", data / "stats.json",
           ["build-training-data", "--input", f"{products}/products/*.parquet", "--output", str(data),
            *sample])
    # The report judges stores the model never saw: this model holds the held-out split's stores out
    # (`linnet train` without --holdout is the production model, on every labelled store).
    _stage("train", model / MODEL_JSON, ["train", "--data", str(data), "--output", str(model),
                                           "--holdout", HELD_OUT_SPLIT])
    _stage("thresholds", None, ["tune-thresholds", "--model", str(model), "--data", str(data),
                                "--target-precision", str(args.target_precision)])
    held_out = held_out_products(products, data, out / "held_out")
    scored = out / "scored"
    _stage("score", None, ["score", "--input", f"{held_out}/products.parquet", "--model", str(model),
                           "--output", str(scored), "--partition", "run-local",
                           "--store_context", str(out / "store_context")])
    report = out / "evaluation"
    _stage("evaluate", None, ["evaluate", "--predictions", str(scored / "categorized" / "run=run-local"),
                              "--labels",
                              f"{held_out}/products.parquet", "--output", str(report), "--model", str(model),
                              "--training-data", str(data)])
    print(f"[run-local] categorized table: {scored}\n[run-local] report: {report / 'report.md'}")
    return 0
