"""`linnet serve` as a subprocess over real HTTP on loopback: the same rows as `linnet score` for 200
shared products (store context from the table the batch run kept), bad input answered with 4xx naming the
field, and in-flight requests finished on SIGTERM."""

from __future__ import annotations

import base64
import itertools
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines import defaults, score

pytestmark = [pytest.mark.slow, pytest.mark.encoders, pytest.mark.subprocesses, pytest.mark.shared_data]
PRODUCTS_DIR = defaults.SHARED_DATA / "products"
PER_STORE, STORES = 20, 10
READY_TIMEOUT_S = 600


def _shared_products() -> list[dict]:
    """20 products of each of 10 stores (the two stores with photos among them): 200 with store-mates."""
    by_store: dict[str, list[dict]] = {}
    with open(PRODUCTS_DIR / "train.jsonl", encoding="utf-8") as lines:
        for line in lines:
            raw = json.loads(line)
            by_store.setdefault(raw["store"], []).append(raw)
    with_photos = sorted(store for store, raws in by_store.items() if any(r.get("image_files") for r in raws))
    others = sorted(store for store, raws in by_store.items()
                    if store not in with_photos and len(raws) >= PER_STORE)
    chosen = (with_photos + others)[:STORES]
    return [raw for store in chosen for raw in by_store[store][:PER_STORE]]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _request(url: str, body: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _categorize(base: str, products: list[dict]) -> tuple[int, dict]:
    return _request(f"{base}/v1/categorize", json.dumps({"products": products}).encode())


class Served:
    def __init__(self, base: str, process: subprocess.Popen, batch_rows: dict[str, dict],
                 products: list[dict], model_dir: Path) -> None:
        self.base, self.process, self.batch_rows = base, process, batch_rows
        self.products, self.model_dir = products, model_dir


@pytest.fixture(scope="module")
def served(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`linnet score --store_context` over the 200 products, then `linnet serve` on the table it kept."""
    root = tmp_path_factory.mktemp("serve")
    products = _shared_products()
    (root / "products.jsonl").write_text("\n".join(json.dumps(raw) for raw in products), encoding="utf-8")
    summary = score.run(["--input", str(root / "products.jsonl"), "--image_root", str(PRODUCTS_DIR),
                         "--model", str(model_dir), "--output", str(root / "out"),
                         "--partition", "2026-12-07", "--store_context", str(root / "context")])
    assert summary["balanced"] and summary["rows_out"] == len(products)
    batch_rows = {row["product_id"]: row
                  for row in pq.read_table(root / "out" / "categorized" / "date=2026-12-07").to_pylist()}
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "serve", "--model", str(model_dir), "--port", str(port),
         "--store_context", str(root / "context"), "--image_root", str(PRODUCTS_DIR),
         "--embedding_cache", "none", "--max_products", "50", "--max_body_mb", "1", "--timeout_s", "600"],
        cwd=root, stdout=subprocess.DEVNULL, stderr=open(root / "serve.log", "wb"))  # noqa: SIM115
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        assert process.poll() is None, (root / "serve.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "linnet serve was not ready in time"
        try:
            if _request(f"{base}/readyz")[0] == 200:
                break
        except OSError:
            pass  # not listening yet
        time.sleep(1)
    yield Served(base, process, batch_rows, products, model_dir)
    if process.poll() is None:
        process.kill()
        process.wait()


def test_serve_gives_the_rows_score_wrote(served: Served) -> None:
    status, model = _request(f"{served.base}/v1/model")
    info = json.loads((served.model_dir / "model.json").read_text())
    assert status == 200 and model["model_version"] == info["model_version"]
    assert model["store_context"]["members"] == len(served.products)
    # Requests of 1 to 13 products from 8 callers at once: the service batches them together, and no
    # caller's products may change another's answer.
    sizes = itertools.cycle([1, 3, 13, 1, 7, 2])
    groups, start = [], 0
    while start < len(served.products):
        size = next(sizes)
        groups.append(served.products[start:start + size])
        start += size
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda group: _categorize(served.base, group), groups))
    online = {}
    for group, (status, body) in zip(groups, answers, strict=True):
        assert status == 200, body
        assert [row["product_id"] for row in body["rows"]] == [raw["product_id"] for raw in group]
        online.update((row["product_id"], row) for row in body["rows"])
    assert sorted(online) == sorted(served.batch_rows)
    for product_id, batch in served.batch_rows.items():
        row = online[product_id]
        for column in ("gpt_id", "gpt_path", "decision", "level_ids", "shopify_category_id", "store",
                       "model_version", "thresholds_version", "taxonomy_version", "abstain_reason"):
            assert row[column] == batch[column], (product_id, column)
        np.testing.assert_allclose(row["level_confidences"], batch["level_confidences"], atol=1e-5,
                                   err_msg=product_id)
        assert row["run_id"].startswith("serve-")


def test_bad_input_gets_a_4xx_naming_the_field_and_the_service_lives_on(served: Served) -> None:
    good = {"product_id": "ok", "store": "s", "title": "Ceramic coffee mug 350 ml"}
    cases = [
        (b"{not json", 400, "invalid_json", None),
        (json.dumps({"products": [{"title": "no id"}]}).encode(), 422, "missing_product_id",
         "products[0].product_id"),
        (json.dumps({"products": [good, {"product_id": "x", "vendor": {"a": 1}}]}).encode(),
         422, "bad_field_type", "products[1].vendor"),
        (json.dumps({"products": [{"product_id": "x", "image_base64": [base64.b64encode(b"text").decode()]}]}
                    ).encode(), 422, "image_unreadable", "products[0].image_uris"),
        (json.dumps({"products": [good] * 51}).encode(), 413, "too_many_products", "products"),
        (json.dumps({"products": [{**good, "description": "x" * 2**20}]}).encode(), 413, "body_too_large",
         None),
    ]
    for body, status, code, field in cases:
        answer = _request(f"{served.base}/v1/categorize", body)
        assert answer[0] == status and answer[1]["error"]["code"] == code, (code, answer)
        assert answer[1]["error"]["field"] == field
    assert _request(f"{served.base}/v1/nothing-here")[0] == 404
    status, body = _categorize(served.base, [good])
    assert status == 200 and body["rows"][0]["product_id"] == "ok"
    assert served.process.poll() is None


def test_sigterm_finishes_in_flight_requests_then_exits(served: Served) -> None:
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(_categorize, served.base, served.products[:40])
        time.sleep(0.5)
        served.process.send_signal(signal.SIGTERM)
        status, body = in_flight.result()
    assert status == 200 and len(body["rows"]) == 40
    assert served.process.wait(timeout=120) == 0
