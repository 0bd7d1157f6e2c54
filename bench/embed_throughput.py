"""Embedding throughput: bare encoders in a plain loop vs `EmbedProducts` on the DirectRunner, in one run.

Text: (a) the bare text encoder over N full product texts (`features.product_text`, truncated at
`--max_tokens`) at each candidate batch size, the best kept; (b) `EmbedProducts` over the same products
(photos removed, cache off) at N and 4N. Images: the same with products that have a photo (text removed):
(a) read + decode + preprocess + encode, (b) the pipeline. (a) picks its batch size on the first N and
then runs over all 4N at it; (b) runs at that batch size. Ratios: steady, the pipeline's
(4N − N) / (t4N − tN), which cancels fixed costs (graph construction, model loading), over (a) on the same
3N products; end to end, the pipeline's 4N / t4N over (a) on all 4N; and the same without the model
load time that RunInference reports (`load_model_latency_milli_secs`), a once-per-worker cost.
Peak RSS is sampled per phase; the N and 4N pipeline runs should be within 15% of each other.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from linnet_core import features, records
from linnet_core.encoders.image import ImageEncoder, load_pixels
from linnet_core.encoders.text import TEXT_MODEL_NAME, load_text_encoder
from pipelines import defaults
from pipelines.embed import NAMESPACE, EmbedConfig, EmbedProducts


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
        started = time.perf_counter()
        yield
        into["seconds"] = time.perf_counter() - started
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


def bare_loop(encode: Callable[[list], object], items: list, batch_sizes: list[int], n: int,
              rss: PeakRss) -> dict:
    """Products/s of `encode` over the first `n` items at each batch size, then at the best one over all
    items, timing the first `n` and the rest apart (the rest is what the steady pipeline rate covers)."""
    encode(items[:max(batch_sizes)])
    result: dict = {"by_batch_size": {}}
    with rss.phase(result):
        for size in batch_sizes:
            started = time.perf_counter()
            for start in range(0, n, size):
                encode(items[start:min(start + size, n)])
            result["by_batch_size"][size] = round(n / (time.perf_counter() - started), 1)
        best = result["best_batch_size"] = max(result["by_batch_size"], key=result["by_batch_size"].get)
        seconds = []
        for part in (items[:n], items[n:]):
            started = time.perf_counter()
            for start in range(0, len(part), best):
                encode(part[start:start + best])
            seconds.append(time.perf_counter() - started)
    result["products_per_s_rest"] = round((len(items) - n) / seconds[1], 1)
    result["products_per_s_all"] = round(len(items) / sum(seconds), 1)
    return result


def pipeline_run(products: list[dict], cfg: EmbedConfig, rss: PeakRss) -> dict:
    """One DirectRunner run of `EmbedProducts`; every product must come out embedded."""
    result: dict = {"products": len(products)}
    with rss.phase(result):
        pipeline = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"]))
        _ = pipeline | "Create" >> beam.Create(products) | "EmbedProducts" >> EmbedProducts(cfg)
        run = pipeline.run()
        run.wait_until_finish()
    metrics = run.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    counters = {c.key.metric.name: c.committed for c in metrics["counters"]}
    if counters.get("products_embedded") != len(products):
        raise RuntimeError(f"pipeline embedded {counters.get('products_embedded')} of {len(products)}")
    load_ms = sum(d.committed.sum for d in metrics["distributions"]
                  if d.key.metric.name == "load_model_latency_milli_secs")
    result["model_load_s"] = round(load_ms / 1000, 2)
    result["products_per_s"] = round(len(products) / result["seconds"], 1)
    result["products_per_s_excluding_load"] = round(len(products) / (result["seconds"] - load_ms / 1000), 1)
    return result


def compare(bare: dict, small: dict, large: dict) -> dict:
    """Pipeline vs bare over the same products: steady (the 4N − N products) and end to end (all 4N)."""
    steady = (large["products"] - small["products"]) / max(large["seconds"] - small["seconds"], 1e-9)
    excluding_load = large["products_per_s_excluding_load"]
    return {"bare_products_per_s": bare["products_per_s_rest"],
            "pipeline_steady_products_per_s": round(steady, 1),
            "ratio_steady": round(steady / bare["products_per_s_rest"], 3),
            "ratio_end_to_end_4n": round(large["products_per_s"] / bare["products_per_s_all"], 3),
            "ratio_excluding_load_4n": round(excluding_load / bare["products_per_s_all"], 3),
            "rss_4n_over_n": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3)}


def text_bench(n: int, cfg: EmbedConfig, batch_sizes: list[int], rss: PeakRss) -> dict:
    products = load_products(4 * n, with_images=False)
    texts = [features.product_text(record) for record in products]
    encoder = load_text_encoder(cfg.text_model or str(Path(cfg.models_dir) / TEXT_MODEL_NAME),
                                cfg.text_engine, cfg.max_tokens, cfg.threads or None)
    lengths = np.array([ids.shape[1] for ids in encoder.token_ids(texts)])
    report = {"encoder": encoder.encoder_id, "mean_chars": round(sum(map(len, texts)) / len(texts)),
              "mean_tokens": round(float(lengths.mean()), 1),
              "share_truncated": round(float((lengths == cfg.max_tokens).mean()), 2)}
    report["bare"] = bare_loop(encoder.encode, texts, batch_sizes, n, rss)
    del encoder
    cfg = replace(cfg, batch_size=report["bare"]["best_batch_size"])
    report["pipeline_n"] = pipeline_run(products[:n], cfg, rss)
    report["pipeline_4n"] = pipeline_run(products, cfg, rss)
    report.update(compare(report["bare"], report["pipeline_n"], report["pipeline_4n"]))
    return report


def image_bench(n: int, cfg: EmbedConfig, batch_sizes: list[int], rss: PeakRss) -> dict:
    products = load_products(4 * n, with_images=True)
    encoder = ImageEncoder(cfg.models_dir, cfg.image_engine, cfg.threads or None)
    decoders = ThreadPoolExecutor(encoder.threads)

    def pixels(record: dict) -> object:
        return load_pixels(Path(record["image_uris"][0]).read_bytes())

    def encode(batch: list[dict]) -> object:
        return encoder.encode(list(decoders.map(pixels, batch)))

    report = {"encoder": encoder.encoder_id}
    report["bare"] = bare_loop(encode, products, batch_sizes, n, rss)
    cfg = replace(cfg, batch_size=report["bare"]["best_batch_size"])
    report["pipeline_n"] = pipeline_run(products[:n], cfg, rss)
    report["pipeline_4n"] = pipeline_run(products, cfg, rss)
    report.update(compare(report["bare"], report["pipeline_n"], report["pipeline_4n"]))
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
    parser.add_argument("--max_tokens", type=int, default=128)
    parser.add_argument("--skip_images", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    rss = PeakRss()
    report = {"cpus": os.cpu_count(), "load_average_start": os.getloadavg()}
    for name, bench, n in (("text", text_bench, args.n), ("image", image_bench, args.image_n)):
        if name == "image" and args.skip_images:
            continue
        cfg = EmbedConfig(models_dir=args.models_dir, text_engine=args.text_engine,
                          image_engine=args.image_engine, max_tokens=args.max_tokens,
                          cache_dir=None)
        report[name] = bench(n, cfg, sizes, rss)
    report["load_average_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    for name in ("text", "image"):
        if name in report:
            part = report[name]
            print(f"{name}: bare {part['bare_products_per_s']}/s, pipeline steady "
                  f"{part['pipeline_steady_products_per_s']}/s, ratio {part['ratio_steady']} "
                  f"(4N: end-to-end {part['ratio_end_to_end_4n']}, excluding model load "
                  f"{part['ratio_excluding_load_4n']}), peak RSS N "
                  f"{part['pipeline_n']['peak_rss_mb']} MB vs 4N {part['pipeline_4n']['peak_rss_mb']} MB "
                  f"(×{part['rss_4n_over_n']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
