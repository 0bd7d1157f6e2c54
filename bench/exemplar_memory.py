"""Exemplar evidence throughput as the memory grows: brute force vs the bounded memory, in one run.

Memories of 9k, 90k and 900k exemplars are replicas of the shared products' labels and stores (replica r
of a product is filed in store `<store>-r<r>`: the stores multiply, as a growing catalogue's would) with
synthetic unit title vectors (the speed of a top-k does not depend on what the vectors say). For each
size: the exemplar count brute force and bounded (`--per_class`, `--per_store_class`), the memory's
bytes, and products/s of `evidence.exemplar_shares` (the SavedModel's exemplar op, a `tf.function`
with the memory as a constant, as exported) over `--queries` products in batches of `--batch`. The caps
default to the model config's. A memory whose vectors exceed `--max_constant_mb` is reported as not
exportable instead of measured: the SavedModel holds it as graph constants, which protobuf caps at 2 GB
in all, and building that graph is what ran out of memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import tensorflow as tf

from linnet_core.exemplars import build_exemplars
from linnet_core.features import TEXT_DIM
from linnet_core.model import evidence
from linnet_core.model.config import default_config
from linnet_core.taxonomy import Taxonomy
from pipelines import defaults


def shared_labels(taxonomy: Taxonomy) -> tuple[np.ndarray, np.ndarray]:
    """Class index per level and store of every labelled shared product."""
    labels, stores = [], []
    with open(defaults.PRODUCTS_JSONL, encoding="utf-8") as lines:
        for line in lines:
            raw = json.loads(line)
            if raw.get("gpt_id") is None:
                continue
            labels.append(taxonomy.level_labels(int(raw["gpt_id"])))
            stores.append(str(raw.get("store")))
    return np.asarray(labels, np.int64), np.asarray(stores, dtype=object)


def replicas(labels: np.ndarray, stores: np.ndarray, size: int, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`size` exemplars: the shared products' labels repeated, each replica in its own stores, with
    random unit vectors."""
    copies = -(-size // len(labels))
    index = np.tile(np.arange(len(labels)), copies)[:size]
    replica = np.repeat(np.arange(copies), len(labels))[:size]
    replica_stores = np.array([f"{store}-r{r}" for store, r in zip(stores[index], replica, strict=True)])
    vectors = rng.standard_normal((size, TEXT_DIM), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), labels[index], replica_stores


def throughput(memory, taxonomy: Taxonomy, queries: np.ndarray, batch: int, rounds: int) -> float:
    """Median products/s of the exemplar op over `queries`, in batches of `batch`."""
    tables = evidence.ExemplarTables.build(taxonomy, memory)
    shares = tf.function(lambda title: evidence.exemplar_shares(title, tables),
                         input_signature=[tf.TensorSpec([None, TEXT_DIM], tf.float32)])
    shares(queries[:batch])
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for start in range(0, len(queries), batch):
            shares(queries[start:start + batch])
        rates.append(len(queries) / (time.perf_counter() - started))
    return round(statistics.median(rates), 1)


def _rate(rate: float | str) -> str:
    return f"{rate} products/s" if isinstance(rate, float) else rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="9000,90000,900000")
    config = default_config()
    parser.add_argument("--per_class", type=int, default=config.exemplars_per_class)
    parser.add_argument("--per_store_class", type=int, default=config.exemplars_per_store_class)
    parser.add_argument("--max_constant_mb", type=int, default=1024,
                        help="larger memories are reported as not exportable, not measured")
    parser.add_argument("--queries", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    taxonomy = Taxonomy.load(defaults.TAXONOMY)
    labels, stores = shared_labels(taxonomy)
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((args.queries, TEXT_DIM), dtype=np.float32)
    report: dict = {"cpus": os.cpu_count(), "load_average_start": os.getloadavg(), "caps": {
        "per_class": args.per_class, "per_store_class": args.per_store_class}, "sizes": []}
    for size in map(int, args.sizes.split(",")):
        vectors, size_labels, size_stores = replicas(labels, stores, size, rng)
        row: dict = {"exemplars": size}
        for name, caps in (("brute", (0, 0)), ("bounded", (args.per_class, args.per_store_class))):
            memory = build_exemplars(vectors, size_labels, size_stores, taxonomy, 150.0, *caps)
            memory_mb = round(memory.vectors.nbytes / 2**20)
            row[name] = {"exemplars": len(memory.weights), "memory_mb": memory_mb, "products_per_s": (
                throughput(memory, taxonomy, queries, args.batch, args.rounds)
                if memory_mb <= args.max_constant_mb else "not exportable")}
            del memory
        report["sizes"].append(row)
        print(f"{size} exemplars: " + "; ".join(
            f"{name} {row[name]['exemplars']} exemplars ({row[name]['memory_mb']} MB): "
            f"{_rate(row[name]['products_per_s'])}" for name in ("brute", "bounded")), flush=True)
    report["load_average_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
