"""Online serving: latency and throughput of `linnet serve` on loopback vs the bare text encoder, in one run.

(a) the bare text encoder in a plain loop over the products' two texts (`features.embedded_texts`),
16 products (32 texts) a batch; (b) `linnet serve` as a subprocess (embedding cache off), driven by a
bounded load generator: C workers, each sending one product per request and the next when answered, at
concurrency 1, 8 and 32. Printed: p50/p95/p99 latency and products/s at each concurrency, the ratio of
served throughput at 32 to (a), and the server's RSS after each thousand requests of the last phase
(`--requests`, 10,000 by default), with the ratio of the last thousand's to the first's.
Targets on the 2-core machine: p99 ≤ 100 ms at concurrency 1, ratio ≥ 0.8 at 32, RSS within 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np

from pipelines import defaults

sys.path.insert(0, str(Path(__file__).parent))
from embed_throughput import load_products  # noqa: E402 - the sibling benchmarks' helpers
from score_throughput import bare_text_encoder, tree_rss  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: str, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "pipelines.cli", "serve", "--model", model, "--port", str(port),
               "--embedding_cache", "none"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_ready(session: aiohttp.ClientSession, base: str, server: subprocess.Popen) -> None:
    while server.poll() is None:
        try:
            async with session.get(f"{base}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(1)
    raise SystemExit(f"linnet serve exited with {server.returncode} before it was ready")


async def load_phase(session: aiohttp.ClientSession, base: str, products: list[dict], concurrency: int,
                     requests: int, server: subprocess.Popen) -> dict:
    """`requests` one-product requests from `concurrency` workers; latencies, rate, RSS per thousand."""
    counter = itertools.count()
    latencies: list[float] = []
    rss_per_thousand: list[int] = []

    async def worker() -> None:
        while (n := next(counter)) < requests:
            record = {**products[n % len(products)], "product_id": f"bench-{concurrency}-{n}"}
            started = time.perf_counter()
            async with session.post(f"{base}/v1/categorize", json={"products": [record]}) as response:
                body = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"request {n}: HTTP {response.status} {body}")
            latencies.append(time.perf_counter() - started)
            if len(latencies) % 1000 == 0:
                rss_per_thousand.append(tree_rss(server.pid))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    p50, p95, p99 = (float(np.percentile(latencies, q)) * 1000 for q in (50, 95, 99))
    return {"concurrency": concurrency, "requests": requests, "p50_ms": round(p50, 1),
            "p95_ms": round(p95, 1), "p99_ms": round(p99, 1), "products_per_s": round(requests / seconds, 1),
            "rss_mb_per_thousand": [round(rss / 2**20) for rss in rss_per_thousand]}


async def drive(args: argparse.Namespace, products: list[dict]) -> list[dict]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(args.model, port)
    try:
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(300)) as session:
            await wait_ready(session, base, server)
            phases = [(1, args.warm), (8, args.warm * 4), (32, args.requests)]
            results = []
            for concurrency, count in phases:
                results.append(await load_phase(session, base, products, concurrency, count, server))
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
            return results
    finally:
        server.terminate()
        server.wait(timeout=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=str(defaults.OUTPUT / "model"), help="model directory")
    parser.add_argument("--products", type=int, default=2000, help="distinct shared products cycled over")
    parser.add_argument("--warm", type=int, default=300, help="requests at concurrency 1 (4x at 8)")
    parser.add_argument("--requests", type=int, default=10_000, help="requests at concurrency 32 (RSS phase)")
    args = parser.parse_args(argv)
    products = [{key: value for key, value in record.items() if key != "updated_at"}
                for record in load_products(args.products, with_images=False)]
    bare = bare_text_encoder(products[:512])
    phases = asyncio.run(drive(args, products))
    last = phases[-1]
    rss = last["rss_mb_per_thousand"]
    report = {
        "cpus": os.cpu_count(), "bare_text_encoder_products_per_s": round(bare, 1), "phases": phases,
        "p99_ms_at_1": phases[0]["p99_ms"],
        "ratio_served_at_32_to_bare": round(last["products_per_s"] / bare, 3),
        "rss_last_over_first_thousand": round(rss[-1] / rss[0], 3) if rss else None,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
