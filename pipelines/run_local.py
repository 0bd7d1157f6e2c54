"""`linnet run-local`: the whole job on the DirectRunner over the shared data, reusing what exists.

import products → build training data → train (once) → tune thresholds → score the held-out stores
→ evaluate against their labels. Each stage runs as its own `linnet` process, exactly as a user or
scheduler would run it; finished stages are reused (delete `out/` or pass `--fresh` to redo them).
Each stage's wall time, CPU time and peak RSS end up in the summary (`OUT/run_local.json`).
"""

from __future__ import annotations

import json
import logging
import os
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


def run_stage(argv: list[str]) -> dict[str, float]:
    """Run `linnet ARGV` as a child process; its wall seconds, CPU seconds (its own and its waited-for
    children's: Beam's worker processes) and peak RSS in MB (its largest process's).

    Raises:
        subprocess.CalledProcessError: the stage failed.
    """
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *argv])
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, child.args)
    return {"wall_s": round(time.monotonic() - started, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def _stage(name: str, done: Path | None, argv: list[str], summary: dict[str, dict]) -> None:
    if done is not None and done.exists():
        print(f"[run-local] {name}: reusing {done}", flush=True)
        summary[name] = {"reused": True}
        return
    print(f"[run-local] {name}: linnet {' '.join(argv)}", flush=True)
    summary[name] = run_stage(argv)
    print(f"[run-local] {name}: done in {summary[name]['wall_s']:.0f} s "
          f"({summary[name]['cpu_s']:.0f} CPU-s, peak RSS {summary[name]['peak_rss_mb']} MB)", flush=True)


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
    parser.add_argument("--embedding_table", "--embedding-table", dest="embedding_table", default=None,
                        help="embedding table folder, local or gs:// (default: OUTPUT/embedding_table): "
                             "training data and scoring embed only what it lacks, and append to it")
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
    table = ["--embedding_table", args.embedding_table or str(out / "embedding_table")]
    stages: dict[str, dict] = {}
    _stage("import", products / "summary.json",
           ["import-products", "--input", args.input, "--output", str(products)], stages)
    _stage("training data", data / "stats.json",
           ["build-training-data", "--input", f"{products}/products/*.parquet", "--output", str(data),
            *table, *sample], stages)
    # The report judges stores the model never saw: this model holds the held-out split's stores out
    # (`linnet train` without --holdout is the production model, on every labelled store).
    _stage("train", model / MODEL_JSON, ["train", "--data", str(data), "--output", str(model),
                                         "--holdout", HELD_OUT_SPLIT], stages)
    _stage("thresholds", None, ["tune-thresholds", "--model", str(model), "--data", str(data),
                                "--target-precision", str(args.target_precision)], stages)
    held_out = held_out_products(products, data, out / "held_out")
    scored = out / "scored"
    _stage("score", None, ["score", "--input", f"{held_out}/products.parquet", "--model", str(model),
                           "--output", str(scored), "--partition", "run-local",
                           "--store_context", str(out / "store_context"), *table], stages)
    report = out / "evaluation"
    _stage("evaluate", None, ["evaluate", "--predictions", str(scored / "categorized" / "run=run-local"),
                              "--labels",
                              f"{held_out}/products.parquet", "--output", str(report), "--model", str(model),
                              "--training-data", str(data), "--products", args.input], stages)
    (out / "run_local.json").write_text(json.dumps({"stages": stages}, indent=2))
    for name, figures in stages.items():
        print(f"[run-local] {name:>13}: " + ("reused" if figures.get("reused") else
              f"{figures['wall_s']:7.1f} s wall, {figures['cpu_s']:7.1f} CPU-s, {figures['peak_rss_mb']} MB"))
    print(f"[run-local] categorized table: {scored}\n[run-local] report: {report / 'report.md'}")
    return 0
