"""Embedding throughput: bare encoders in a plain loop vs `EmbedProducts` on the DirectRunner, in one run.

Text: (a) the bare text encoder in a plain loop over 4N products' two texts (`features.embedded_texts`:
the full product text and the title with type, truncated at `--max_tokens`) at the best batch size
(picked on the first N); (b) `EmbedProducts` over the same products (photos removed, cache off) at that
batch cap, at N and at 4N. Images: the same with products that have a photo (text removed); (a) is read
+ decode + preprocess + encode. (a) and (b) are interleaved in rounds and median ratios (b)/(a) printed:
excluding model load (the load time RunInference reports, a once-per-worker cost), steady ((4N − N) /
(t4N − tN), which also cancels graph construction), end to end, and per CPU-second of the process
(products per CPU-second, load excluded), which other work on a shared machine does not skew. Peak RSS
is sampled per phase in this process, and measured for the pipeline alone at N and at 4N in fresh
processes: those two should be within 15%. With `--with_table` every pipeline run joins and appends to
its own empty embedding table (a cold run: the join, the photo reads that key it and the append, all paid).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult

from linnet_core import features, records
from linnet_core.encoders.image import ImageEncoder, load_pixels
from linnet_core.encoders.text import DEFAULT_MAX_TOKENS, TEXT_MODEL_NAME, load_text_encoder
from pipelines import defaults
from pipelines.counters import NAMESPACE
from pipelines.embed import INFERENCE_NAMESPACE, EmbedConfig, EmbedProducts


class PeakRss:
    """Samples the process's resident set size every 20 ms; `phase()` reports the peak within it."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @staticmethod
    def current() -> int:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.current())

    @contextmanager
    def phase(self, into: dict) -> Iterator[None]:
        gc.collect()
        self.peak = self.current()
        started, cpu = time.perf_counter(), time.process_time()
        yield
        into["seconds"] = time.perf_counter() - started
        into["cpu_seconds"] = time.process_time() - cpu
        into["peak_rss_mb"] = round(max(self.peak, self.current()) / 2**20)


def load_products(count: int, with_images: bool) -> list[dict]:
    """`count` shared products in file order: with a photo (text removed) or without (photos removed)."""
    out = []
    with open(defaults.PRODUCTS_JSONL, encoding="utf-8") as lines:
        for line in lines:
            raw = json.loads(line)
            if bool(raw.get("image_files")) != with_images:
                continue
            record = records.normalize(raw, str(defaults.SHARED_DATA / "products"))
            if with_images:
                record = {"product_id": record["product_id"], "image_uris": record["image_uris"][:1]}
            out.append(record)
            if len(out) == count:
                break
    if len(out) < count:
        raise SystemExit(f"only {len(out)} shared products {'with' if with_images else 'without'} photos")
    return out


def best_batch_size(encode: Callable[[list], object], items: list, batch_sizes: list[int]) -> dict:
    """Products/s of the bare loop over `items` at each candidate batch size, and the best of them."""
    encode(items[:max(batch_sizes)])
    rates = {}
    for size in batch_sizes:
        started = time.perf_counter()
        for start in range(0, len(items), size):
            encode(items[start:start + size])
        rates[size] = round(len(items) / (time.perf_counter() - started), 1)
    return {"by_batch_size": rates, "best": max(rates, key=rates.get)}


def bare_pass(encode: Callable[[list], object], items: list, size: int, rss: PeakRss) -> dict:
    """One plain loop over all `items` at batch size `size`."""
    result: dict = {"products": len(items)}
    with rss.phase(result):
        for start in range(0, len(items), size):
            encode(items[start:start + size])
    result["products_per_s"] = round(len(items) / result["seconds"], 1)
    result["products_per_cpu_s"] = round(len(items) / result["cpu_seconds"], 1)
    return result


def embed_products(products: list[dict], cfg: EmbedConfig, run_id: str | None = None
                   ) -> tuple[PipelineResult, dict[str, int]]:
    """One DirectRunner run of `EmbedProducts` over `products`: the finished run and its counters (by
    name). Raises unless every product came out embedded."""
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"]))
    _ = pipeline | "Create" >> beam.Create(products) | "EmbedProducts" >> EmbedProducts(cfg, run_id)
    run = pipeline.run()
    run.wait_until_finish()
    counters = {c.key.metric.name: c.committed
                for c in run.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]}
    if counters.get("products_embedded") != len(products):
        raise RuntimeError(f"pipeline embedded {counters.get('products_embedded')} of {len(products)}")
    return run, counters


def pipeline_run(products: list[dict], cfg: EmbedConfig, rss: PeakRss) -> dict:
    """One DirectRunner run of `EmbedProducts`; every product must come out embedded (with a table in
    `cfg`, a fresh empty one)."""
    if cfg.table_dir:
        cfg = replace(cfg, table_dir=tempfile.mkdtemp(prefix="linnet-bench-table-"))
    result: dict = {"products": len(products)}
    with rss.phase(result):
        run, _ = embed_products(products, cfg)
    # RunInference reports the load in the embedder's own namespace, not among the stage's counters.
    inference = run.metrics().query(MetricsFilter().with_namespace(INFERENCE_NAMESPACE))
    load_ms = sum(d.committed.sum for d in inference["distributions"]
                  if d.key.metric.name == "load_model_latency_milli_secs")
    if not load_ms:
        raise RuntimeError("RunInference reported no model load: the load-free ratios would include it")
    result["model_load_s"] = round(load_ms / 1000, 2)
    result["products_per_s"] = round(len(products) / result["seconds"], 1)
    result["products_per_s_excluding_load"] = round(len(products) / (result["seconds"] - load_ms / 1000), 1)
    result["products_per_cpu_s_excluding_load"] = round(
        len(products) / max(result["cpu_seconds"] - load_ms / 1000, 1e-9), 1)
    return result


def _pipeline_peak_rss(products: list[dict], cfg: EmbedConfig) -> int:
    pipeline_run(products, cfg, PeakRss())
    # VmHWM belongs to this process's own address space (ru_maxrss would carry the parent's over exec).
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmHWM:")).split()[1]) // 1024


def fresh_process_peak_rss(products: list[dict], cfg: EmbedConfig) -> int:
    """Peak RSS (MB) of a new process that only runs the pipeline over `products`: a worker's footprint,
    free of what this process has loaded or its allocator kept from earlier phases."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_pipeline_peak_rss, products, cfg).result()


def measure(encode: Callable[[list], object], items: list, products: list[dict], n: int, cfg: EmbedConfig,
            batch_sizes: list[int], rounds: int, rss: PeakRss) -> dict:
    """Bare loop vs pipeline over the same 4N products, interleaved in `rounds` rounds (the machine is
    shared: interleaving keeps a burst of someone else's work from landing on one side only)."""
    report: dict = {"batch_sizes": best_batch_size(encode, items[:n], batch_sizes)}
    cfg = replace(cfg, batch_size=report["batch_sizes"]["best"])
    report["rounds"] = []
    for _ in range(rounds):
        bare = bare_pass(encode, items, cfg.batch_size, rss)
        small, large = pipeline_run(products[:n], cfg, rss), pipeline_run(products, cfg, rss)
        steady = (large["products"] - small["products"]) / max(large["seconds"] - small["seconds"], 1e-9)
        report["rounds"].append({
            "bare": bare, "pipeline_n": small, "pipeline_4n": large,
            "ratio_steady": round(steady / bare["products_per_s"], 3),
            "ratio_excluding_load": round(large["products_per_s_excluding_load"] / bare["products_per_s"], 3),
            "ratio_end_to_end": round(large["products_per_s"] / bare["products_per_s"], 3),
            "cpu_ratio_excluding_load": round(large["products_per_cpu_s_excluding_load"]
                                              / bare["products_per_cpu_s"], 3)})
    for key in ("ratio_steady", "ratio_excluding_load", "ratio_end_to_end", "cpu_ratio_excluding_load"):
        report[key] = round(statistics.median(r[key] for r in report["rounds"]), 3)
    report["bare_products_per_s"] = round(statistics.median(r["bare"]["products_per_s"]
                                                            for r in report["rounds"]), 1)
    report["pipeline_products_per_s_excluding_load"] = round(statistics.median(
        r["pipeline_4n"]["products_per_s_excluding_load"] for r in report["rounds"]), 1)
    report["peak_rss_mb_n"], report["peak_rss_mb_4n"] = (fresh_process_peak_rss(products[:n], cfg),
                                                          fresh_process_peak_rss(products, cfg))
    report["rss_4n_over_n"] = round(report["peak_rss_mb_4n"] / report["peak_rss_mb_n"], 3)
    return report


def text_bench(n: int, cfg: EmbedConfig, batch_sizes: list[int], rounds: int, rss: PeakRss) -> dict:
    products = load_products(4 * n, with_images=False)
    pairs = [features.embedded_texts(record) for record in products]
    texts = [text for pair in pairs for text in pair]
    encoder = load_text_encoder(cfg.text_model or str(Path(cfg.models()) / TEXT_MODEL_NAME),
                                cfg.text_engine, cfg.max_tokens, cfg.threads or None)
    lengths = np.array([ids.shape[1] for ids in encoder.token_ids(texts)])
    report = {"encoder": encoder.encoder_id, "mean_chars": round(sum(map(len, texts)) / len(texts)),
              "mean_tokens": round(float(lengths.mean()), 1),
              "share_truncated": round(float((lengths == cfg.max_tokens).mean()), 2)}

    def encode(batch: list[tuple[str, str]]) -> object:
        return encoder.encode([text for pair in batch for text in pair])

    report.update(measure(encode, pairs, products, n, cfg, batch_sizes, rounds, rss))
    return report


def image_bench(n: int, cfg: EmbedConfig, batch_sizes: list[int], rounds: int, rss: PeakRss) -> dict:
    products = load_products(4 * n, with_images=True)
    encoder = ImageEncoder(cfg.models(), cfg.image_engine, cfg.threads or None)
    decoders = ThreadPoolExecutor(encoder.threads)

    def pixels(record: dict) -> object:
        return load_pixels(Path(record["image_uris"][0]).read_bytes())

    def encode(batch: list[dict]) -> object:
        return encoder.encode(list(decoders.map(pixels, batch)))

    report = {"encoder": encoder.encoder_id}
    report.update(measure(encode, products, products, n, cfg, batch_sizes, rounds, rss))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="text products in the small run (4N in the large)")
    parser.add_argument("--image_n", type=int, default=250, help="products with a photo in the small run")
    parser.add_argument("--batch_sizes", default="8,16,32,64", help="bare-loop batch sizes to try")
    parser.add_argument("--models_dir", default=str(defaults.MODELS))
    parser.add_argument("--text_engine", default="onnx")
    parser.add_argument("--image_engine", default="onnx")
    parser.add_argument("--max_tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved bare/pipeline rounds")
    parser.add_argument("--skip_images", action="store_true")
    parser.add_argument("--skip_text", action="store_true")
    parser.add_argument("--with_table", action="store_true",
                        help="each pipeline run joins and appends to a fresh embedding table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    rss = PeakRss()
    report = {"cpus": os.cpu_count(), "load_average_start": os.getloadavg(), "with_table": args.with_table}
    for name, bench, n in (("text", text_bench, args.n), ("image", image_bench, args.image_n)):
        if (name == "image" and args.skip_images) or (name == "text" and args.skip_text):
            continue
        cfg = EmbedConfig(models_dir=args.models_dir, text_engine=args.text_engine,
                          image_engine=args.image_engine, max_tokens=args.max_tokens,
                          cache_dir=None, table_dir="fresh per run" if args.with_table else None)
        report[name] = bench(n, cfg, sizes, args.rounds, rss)
    report["load_average_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    for name in ("text", "image"):
        if name in report:
            part = report[name]
            print(f"{name}: bare {part['bare_products_per_s']}/s, pipeline (model load excluded) "
                  f"{part['pipeline_products_per_s_excluding_load']}/s; median ratios over "
                  f"{len(part['rounds'])} rounds: excluding load {part['ratio_excluding_load']}, steady "
                  f"{part['ratio_steady']}, end to end {part['ratio_end_to_end']}, per CPU-second "
                  f"{part['cpu_ratio_excluding_load']}; peak RSS N "
                  f"{part['peak_rss_mb_n']} MB vs 4N {part['peak_rss_mb_4n']} MB (×{part['rss_4n_over_n']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
