"""Training-data pipeline wall time with a cold vs a warm embedding cache, in one run.

Runs `linnet build-training-data` twice over the same products sharing a fresh cache folder: the first
run embeds everything, the second reads every embedding from the cache. The ratio says how much of the
cold run is embedding; the warm time is the IO + tf.Transform floor. The machine may be shared: run it
when it is quiet, and compare only figures from one run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from pipelines import build_training_data, defaults


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", default=defaults.PRODUCTS_JSONL, help="labelled products (JSONL/Parquet)")
    parser.add_argument("--sample", type=int, default=1000, help="products per run (0: all)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-training-data-") as tmp:
        flags = ["--input", args.input, "--embedding_cache", f"{tmp}/cache"]
        flags += ["--sample", str(args.sample)] if args.sample else []
        seconds = {}
        for run in ("cold", "warm"):
            start = time.perf_counter()
            stats = build_training_data.run([*flags, "--output", str(Path(tmp) / run)])
            seconds[run] = round(time.perf_counter() - start, 1)
    result = {"products": stats["inputs"], "examples": stats["examples"], "cold_s": seconds["cold"],
              "warm_s": seconds["warm"], "cold_over_warm": round(seconds["cold"] / seconds["warm"], 2),
              "warm_products_per_s": round(stats["inputs"] / seconds["warm"], 1)}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
