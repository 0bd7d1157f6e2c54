"""The embedding table at work: what a run embeds when the products are unchanged or 10% changed, and
whether the local cache still earns its place beside it, in one run.

`EmbedProducts` on the DirectRunner over N shared products (every k-th line, so stores and photos are
represented as in the whole file; texts and photos as imported):
(1) cold, an empty table (and no local cache); (2) the same products again; (3) 10% of them changed
(every tenth product's title edited, its photo kept); then, for the fast path, (4) the same products
with a warm local cache and no table, and (5) the table and the warm cache together. Printed per run:
products sent to the encoders (`products_encoded`), vectors appended, table hits, wall and CPU seconds.
The embedding stage's pipeline/bare ratio with the table on is `bench/embed_throughput.py --with_table`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from linnet_core import records
from pipelines import defaults
from pipelines.embed import EmbedConfig

sys.path.insert(0, str(Path(__file__).parent))
from embed_throughput import embed_products  # noqa: E402 - the sibling benchmark's EmbedProducts run
from scale import base_sample  # noqa: E402 - the sibling benchmark's spread sample of the shared products


def changed(products: list[dict], every: int) -> list[dict]:
    """Every `every`-th product with an edited title (so both its texts change), the rest as they were."""
    return [dict(p, title=f"{p.get('title') or ''} (2027 edition)") if i % every == 0 else p
            for i, p in enumerate(products)]


def embed_run(products: list[dict], cfg: EmbedConfig) -> dict:
    """One DirectRunner run of `EmbedProducts`: its counters, wall and CPU seconds."""
    started, cpu = time.perf_counter(), time.process_time()
    _, counters = embed_products(products, cfg, run_id="bench")
    return {"products": len(products), "seconds": round(time.perf_counter() - started, 1),
            "cpu_seconds": round(time.process_time() - cpu, 1),
            **{name: counters.get(name, 0) for name in (
                "products_encoded", "table_vectors_appended", "text_table_hits", "image_table_hits",
                "text_cache_hits", "image_cache_hits", "image_ok")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400, help="shared products per run")
    parser.add_argument("--changed_every", type=int, default=10, help="change one product in this many")
    parser.add_argument("--models_dir", default=str(defaults.MODELS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    products = [records.normalize(raw) for raw in base_sample(args.n)]
    work = Path(tempfile.mkdtemp(prefix="linnet-bench-table-"))
    base = EmbedConfig(models_dir=args.models_dir, cache_dir=None)
    table = replace(base, table_dir=str(work / "table"))
    cache = replace(base, cache_dir=str(work / "cache"))
    report: dict = {"cpus": os.cpu_count(), "load_average_start": os.getloadavg()}
    report["cold"] = embed_run(products, table)
    report["unchanged"] = embed_run(products, table)
    report["changed_10pct"] = embed_run(changed(products, args.changed_every), table)
    embed_run(products, cache)  # fills the local cache
    report["cache_only_warm"] = embed_run(products, cache)
    report["table_and_cache_warm"] = embed_run(products, replace(cache, table_dir=table.table_dir))
    report["load_average_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    n, changed_n, cold = len(products), len(products[::args.changed_every]), report["cold"]
    print(f"cold: {cold['products_encoded']}/{n} products encoded in {cold['seconds']} s; "
          f"unchanged: {report['unchanged']['products_encoded']}/{n} encoded, "
          f"{report['unchanged']['table_vectors_appended']} vectors appended, "
          f"{report['unchanged']['seconds']} s; 10% changed ({changed_n} products): "
          f"{report['changed_10pct']['products_encoded']} encoded "
          f"({report['changed_10pct']['products_encoded'] / n:.1%}), "
          f"{report['changed_10pct']['table_vectors_appended']} vectors appended, "
          f"{report['changed_10pct']['seconds']} s; warm local cache alone "
          f"{report['cache_only_warm']['seconds']} s vs warm table alone {report['unchanged']['seconds']} s "
          f"vs both {report['table_and_cache_warm']['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
