"""How run-local's stages grow with the products: wall time, CPU time and peak RSS per stage at 1×, 2× and
4×, and each stage's growth exponent (the slope of log cost over log scale; 1 is linear).

1× is a sample of the shared products (every k-th line, so it spans the stores; `--base`), to keep three
cold runs affordable on a shared 2-core machine. Scale s adds s − 1 replicas of it: replica r of a
product has id `<id>-r<r>`, store `<store>-r<r>` (the catalogue grows by merchants) and its title and
description edited (so its texts are new to the encoders); photos are shared with the original, and
are encoded again in every run (each scale starts from an empty embedding cache and table). Each scale
is one cold `linnet run-local`; its per-stage figures come from OUT/run_local.json (`os.wait4`: a
stage's CPU seconds include its worker processes, its peak RSS is its largest process's). A stage whose
wall or CPU exponent exceeds `--flag_above` is flagged super-linear.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from pipelines import defaults

FIGURES = ("wall_s", "cpu_s", "peak_rss_mb")


def base_sample(count: int) -> list[dict]:
    """`count` shared products spread over the file (and so over its stores), photos as absolute paths."""
    lines = Path(defaults.PRODUCTS_JSONL).read_text(encoding="utf-8").splitlines()
    picked = [json.loads(line) for line in lines[::max(len(lines) // count, 1)][:count]]
    root = Path(defaults.PRODUCTS_JSONL).parent
    for raw in picked:
        raw["image_files"] = [str(root / path) for path in raw.get("image_files") or []]
    return picked


def replica(raw: dict, r: int) -> dict:
    """Copy `r` of a product: new id and store, perturbed texts, the same label and photos."""
    return {**raw, "product_id": f"{raw['product_id']}-r{r}", "store": f"{raw.get('store')}-r{r}",
            "title": f"{raw.get('title') or ''} (lot {r})",
            "description": f"Lot {r}. {raw.get('description') or ''}"}


def run_scale(products: list[dict], scale: int, work: Path) -> dict:
    """One cold run-local over `scale` × the products, with a LinNét cache of its own (models linked)."""
    folder = work / f"x{scale}"
    cache = folder / "linnet-cache"
    cache.mkdir(parents=True)
    (cache / "models").symlink_to(defaults.MODELS)
    data = folder / "products.jsonl"
    rows = [replica(raw, r) if r else raw for r in range(scale) for raw in products]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    log = folder / "run-local.log"
    with log.open("w") as out:
        subprocess.run([sys.executable, "-m", "pipelines.cli", "run-local", "--input", str(data),
                        "--output", str(folder / "out")], check=True, stdout=out, stderr=subprocess.STDOUT,
                       env={**os.environ, "LINNET_CACHE": str(cache)})
    return json.loads((folder / "out" / "run_local.json").read_text())["stages"]


def exponent(scales: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) on log(scale)."""
    return round(float(np.polyfit(np.log(scales), np.log(np.maximum(values, 1e-3)), 1)[0]), 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=int, default=400, help="shared products at 1×")
    parser.add_argument("--scales", default="1,2,4")
    parser.add_argument("--flag_above", type=float, default=1.15, help="exponent flagged super-linear")
    args = parser.parse_args(argv)
    scales = [int(s) for s in args.scales.split(",")]
    products = base_sample(args.base)
    work = Path(tempfile.mkdtemp(prefix="linnet-bench-scale-"))
    report: dict = {"cpus": os.cpu_count(), "load_average_start": os.getloadavg(),
                    "base_products": len(products), "work": str(work), "runs": {}}
    for scale in scales:
        report["runs"][scale] = run_scale(products, scale, work)
        print(f"{scale}×: " + json.dumps(report["runs"][scale]), flush=True)
    report["load_average_end"] = os.getloadavg()
    growth, flagged = {}, []
    for stage in report["runs"][scales[0]]:
        growth[stage] = {figure: exponent(scales, [report["runs"][s][stage][figure] for s in scales])
                         for figure in FIGURES}
        if max(growth[stage]["wall_s"], growth[stage]["cpu_s"]) > args.flag_above:
            flagged.append(stage)
    report["growth_exponents"], report["super_linear"] = growth, flagged
    print(json.dumps(report, indent=2))
    print(f"{'stage':>14} " + " ".join(f"{f'{figure} ' + '/'.join(f'{s}x' for s in scales):>34}"
                                         for figure in FIGURES) + "  exponents (wall, cpu, rss)")
    for stage, exponents in growth.items():
        cells = [" / ".join(str(report["runs"][s][stage][figure]) for s in scales) for figure in FIGURES]
        print(f"{stage:>14} " + " ".join(f"{cell:>34}" for cell in cells)
              + f"  {exponents['wall_s']}, {exponents['cpu_s']}, {exponents['peak_rss_mb']}"
              + ("  SUPER-LINEAR" if stage in flagged else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
