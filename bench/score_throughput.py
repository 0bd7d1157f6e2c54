"""End-to-end scoring throughput: `linnet score` on the DirectRunner (multi-process, 2 workers) vs the bare
text encoder over the same product texts, in one run.

(a) the bare text encoder in a plain loop over the 4N products' two texts (`features.embedded_texts`),
16 products (32 texts) a batch; (b) `linnet score` as a subprocess, embedding cache off, over N and over
4N of the same products (photos kept), `--direct_running_mode=multi_processing --direct_num_workers=2`.
Printed: products/s of each, the ratio (b)/(a) end to end and steady ((4N − N) / (t4N − tN), which
cancels start-up: imports, model loads, graph construction), and the peak RSS of the whole process tree
(the job and its SDK workers) at N and 4N, which should be within 15%.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from linnet_core import features
from linnet_core.encoders.text import TEXT_MODEL_NAME, load_text_encoder
from pipelines import defaults
from pipelines.io import to_row

sys.path.insert(0, str(Path(__file__).parent))
from embed_throughput import load_products  # noqa: E402 - the sibling benchmark's product sampler


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        line = next((line for line in status.splitlines() if line.startswith("VmRSS:")), None)
        total += int(line.split()[1]) * 1024 if line else 0
    return total


def score_run(products: list[dict], model: str, folder: Path) -> dict:
    """One `linnet score` subprocess over `products`; wall time and peak tree RSS."""
    folder.mkdir(parents=True)
    pq.write_table(_table(products), folder / "products.parquet")
    command = [sys.executable, "-m", "pipelines.cli", "score", "--input", str(folder / "products.parquet"),
               "--model", model, "--output", str(folder / "out"), "--partition", "bench",
               "--embedding_cache", "none", "--direct_running_mode=multi_processing",
               "--direct_num_workers=2"]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = 0
    sampler_done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not sampler_done.wait(0.1):
            peak = max(peak, tree_rss(process.pid))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    stdout, _ = process.communicate()
    seconds = time.perf_counter() - started
    sampler_done.set()
    thread.join()
    if process.returncode:
        raise RuntimeError(f"linnet score failed with exit code {process.returncode}")
    summary = json.loads(stdout[stdout.index("{"):])
    if summary["rows_out"] + summary["dead_letters"] != len(products):
        raise RuntimeError(f"records lost: {summary}")
    return {"products": len(products), "seconds": round(seconds, 1),
            "products_per_s": round(len(products) / seconds, 1), "peak_rss_mb": round(peak / 2**20)}


def bare_text_encoder(products: list[dict]) -> float:
    """Products/s of the bare text encoder over both texts of each product, 32 texts a batch."""
    texts = [text for record in products for text in features.embedded_texts(record)]
    encoder = load_text_encoder(str(defaults.MODELS / TEXT_MODEL_NAME), "onnx")
    encoder.encode(texts[:32])
    started = time.perf_counter()
    for start in range(0, len(texts), 32):
        encoder.encode(texts[start:start + 32])
    return len(products) / (time.perf_counter() - started)


def _table(products: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([to_row(record, "products") for record in products],
                                schema=schemas.arrow_schema("products"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300, help="N (the larger run has 4N products)")
    parser.add_argument("--model", default=str(defaults.OUTPUT / "model"), help="model directory")
    args = parser.parse_args(argv)
    products = load_products(4 * args.n, with_images=False)
    bare = bare_text_encoder(products)
    with tempfile.TemporaryDirectory() as tmp:
        small = score_run(products[:args.n], args.model, Path(tmp, "n"))
        large = score_run(products, args.model, Path(tmp, "4n"))
    extra_seconds = large["seconds"] - small["seconds"]
    if extra_seconds <= 0:
        raise SystemExit(f"4N ran no slower than N ({large['seconds']} s vs {small['seconds']} s): "
                         "start-up dominates, raise --n")
    steady = (large["products"] - small["products"]) / extra_seconds
    report = {
        "cpus": os.cpu_count(), "bare_text_encoder_products_per_s": round(bare, 1),
        "score_n": small, "score_4n": large, "score_steady_products_per_s": round(steady, 1),
        "ratio_end_to_end_4n": round(large["products_per_s"] / bare, 3),
        "ratio_steady": round(steady / bare, 3),
        "rss_4n_over_n": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
