"""The package as a Dataflow worker gets it: its sdist installed into a fresh virtualenv outside the
checkout, run from another folder with gs:// paths only (the storage emulator), no `../shared` beside
it and an empty LinNét cache.

The pinned stack comes from the project's virtualenv through one `.pth` path line, so installing takes
seconds; that line does not run the `.pth` hooks of that folder, so the checkout's editable install
stays out (the test checks that `linnet_core` is the installed copy).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gcs_emulator import BUCKET, emulator_bucket, running_gcs

import schemas
from linnet_core.model import MODEL_JSON
from linnet_core.publish import MANIFEST
from linnet_core.records import normalize
from linnet_core.taxonomy import Taxonomy
from pipelines import defaults
from pipelines.embed import EmbedConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
GS = f"gs://{BUCKET}"
DAYS = (dt.date(2026, 11, 23), dt.date(2026, 11, 24))
# int8 text and ONNX image encoders: the smallest prepared set to put on the emulator (~130 MB).
EMBED = EmbedConfig(text_engine="onnx-int8", image_engine="onnx")
EMBED_FLAGS = [f"--models_dir={GS}/encoders", f"--text_engine={EMBED.text_engine}",
               f"--image_engine={EMBED.image_engine}", "--embedding_cache=none"]
INPUT = f"{GS}/input/*.parquet"
PURELIB = "import sysconfig; print(sysconfig.get_paths()['purelib'])"


def _run(command: list[str], env: Mapping[str, str], cwd: Path) -> str:
    done = subprocess.run(command, env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise AssertionError(f"{command[:2]} failed ({done.returncode}):\n{done.stderr[-6000:]}")
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with only LinNét's sdist installed, the pinned stack on its path."""
    root = tmp_path_factory.mktemp("fresh")
    bare = {"PATH": "/usr/bin:/bin"}
    _run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(root / "dist")], bare, PROJECT_ROOT)
    (sdist,) = (root / "dist").glob("linnet-*.tar.gz")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], bare, root)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(root)}
    purelib = _run([str(venv / "bin" / "python"), "-c", PURELIB], env, root).strip()
    Path(purelib, "linnet-pinned-stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(venv / "bin" / "pip"), "install", "--quiet", "--no-index", "--no-deps", "--no-build-isolation",
          "--disable-pip-version-check", str(sdist)], env, root)
    return venv


def _real_products() -> list[dict[str, Any]]:
    """Real products: five of five stores and three with photos (relative `images/...` paths), updated
    on two days; and an older copy of the first, which deduplication turns into a dead letter."""
    plain: dict[str, dict[str, Any]] = {}
    photos: list[dict[str, Any]] = []
    with open(defaults.PRODUCTS_JSONL, encoding="utf-8") as lines:
        for line in lines:
            raw = json.loads(line)
            if raw["image_files"] and len(photos) < 3:
                photos.append(normalize(raw))
            elif not raw["image_files"] and len(plain) < 5:
                plain.setdefault(raw["store"], normalize(raw))
            if len(photos) == 3 and len(plain) == 5:
                break
    chosen = [*plain.values(), *photos]
    for index, product in enumerate(chosen):
        product["updated_at"] = dt.datetime.combine(DAYS[index % 2], dt.time(8), tzinfo=dt.UTC)
    older = {**chosen[0], "title": "an older version",
             "updated_at": chosen[0]["updated_at"] - dt.timedelta(hours=1)}
    return [*chosen, older]


def _stage_inputs(bucket: Any, products: list[dict[str, Any]]) -> None:
    """The encoder files the engines read, the input Parquet and its photos beside it, on gs://."""
    photos = Path(defaults.PRODUCTS_JSONL).parent
    uploads = {f"encoders/{name}": defaults.MODELS / name for name in EMBED.model_files()}
    uploads |= {f"input/{uri}": photos / uri for product in products for uri in product["image_uris"]}
    for name, source in uploads.items():
        bucket.blob(name).upload_from_filename(source)
    table = pa.Table.from_pylist(products, schema=schemas.arrow_schema("products"))
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    bucket.blob("input/products.parquet").upload_from_string(buffer.getvalue())


def _json(bucket: Any, name: str) -> dict[str, Any]:
    return json.loads(bucket.blob(name).download_as_bytes())


def _committed_rows(bucket: Any, folder: str) -> list[dict[str, Any]]:
    """The rows of a committed partition, read through its manifest."""
    manifest = _json(bucket, f"{folder}/{MANIFEST}")
    tables = [pq.read_table(io.BytesIO(bucket.blob(f"{folder}/{name}").download_as_bytes()))
              for name in manifest["files"]]
    return [row for table in tables for row in table.to_pylist()]


def _summaries(bucket: Any, output: str) -> Iterator[dict[str, Any]]:
    for blob in bucket.list_blobs(prefix=f"{output}/_runs/"):
        yield json.loads(blob.download_as_bytes())


@pytest.mark.slow
@pytest.mark.encoders
@pytest.mark.emulator
@pytest.mark.subprocesses
def test_installed_package_scores_and_backfills_from_gs_and_a_retune_reaches_the_rows(
        fresh_venv: Path, model_dir: Path, gpt: Taxonomy, tmp_path: Path) -> None:
    from synthetic_training_data import write_training_data

    workdir, model, data = tmp_path / "elsewhere", tmp_path / "model", tmp_path / "data"
    workdir.mkdir()
    shutil.copytree(model_dir, model)
    # A calibration split the model never saw (the fixture's seed: the same label prototypes).
    write_training_data(data, gpt, sizes={"calibration": 100})
    products = _real_products()

    with running_gcs() as gcs:
        env = {"PATH": f"{fresh_venv / 'bin'}:/usr/bin:/bin", "HOME": str(workdir),
               "LINNET_CACHE": str(workdir / "cache"), "TF_CPP_MIN_LOG_LEVEL": "2", **gcs}

        def linnet(*args: str) -> str:
            return _run([str(fresh_venv / "bin" / "linnet"), *args], env, workdir)

        def stage() -> tuple[str, dict[str, Any]]:
            """`dataflow-submit --dry_run`: stages the model, builds the Dataflow job, submits nothing."""
            info = json.loads((model / MODEL_JSON).read_text())
            log = linnet("dataflow-submit", "--project=linnet-test", "--region=europe-west1",
                         f"--bucket={GS}", f"--model={model}", "--sdk_container_image=linnet:test",
                         "--dry_run=True", f"--input={INPUT}", f"--output={GS}/scored", *EMBED_FLAGS)
            staged = f"{GS}/models/{info['model_version']}"
            assert f"model staged at {staged}" in log
            return staged, info

        def score(staged: str, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            linnet("score", f"--input={INPUT}", f"--model={staged}", f"--output={GS}/scored",
                   f"--partition={DAYS[1]}", f"--run_id={run_id}", "--direct_running_mode=multi_processing",
                   "--direct_num_workers=2", *EMBED_FLAGS)
            return (_json(bucket, f"scored/_runs/{run_id}.json"),
                    _committed_rows(bucket, f"scored/categorized/date={DAYS[1]}"))

        location = _run([str(fresh_venv / "bin" / "python"), "-c",
                         "import linnet_core; print(linnet_core.__file__)"], env, workdir)
        assert Path(location.strip()).is_relative_to(fresh_venv)
        bucket = emulator_bucket(gcs)
        _stage_inputs(bucket, products)
        staged, info = stage()

        summary, rows = score(staged, "fresh-1")
        assert summary["balanced"] and summary["rows_in"] == len(products) == 9
        assert summary["rows_out"] == len(rows) == 8 and summary["dead_letters"] == 1
        assert summary["images"]["ok"] == 3  # relative photo paths resolved beside the gs:// input
        dead = _committed_rows(bucket, f"scored/dead_letters/date={DAYS[1]}")
        assert [row["reason"] for row in dead] == ["duplicate_product_id"]
        assert sorted(row["product_id"] for row in rows) == sorted({p["product_id"] for p in products})
        assert {(row["model_version"], row["thresholds_version"]) for row in rows} == {
            (info["model_version"], info["thresholds_version"])}

        linnet("backfill", "--incremental", f"--since={DAYS[0]}", f"--until={DAYS[1]}", f"--input={INPUT}",
               f"--model={staged}", f"--output={GS}/daily", *EMBED_FLAGS)
        assert _json(bucket, "daily/_watermark.json")["day"] == DAYS[1].isoformat()
        for day in DAYS:
            day_rows = _committed_rows(bucket, f"daily/categorized/date={day}")
            day_dead = _committed_rows(bucket, f"daily/dead_letters/date={day}")
            assert len(day_rows) + len(day_dead) == sum(p["updated_at"].date() == day for p in products)
            assert {row["model_version"] for row in day_rows} == {info["model_version"]}
        assert [s["balanced"] for s in _summaries(bucket, "daily")] == [True, True]

        linnet("tune-thresholds", f"--model={model}", f"--data={data}", "--folds=0", "--target-precision=0.5")
        restaged, retuned = stage()
        assert restaged != staged and retuned["thresholds_version"] != info["thresholds_version"]
        summary, rows = score(restaged, "fresh-2")
        assert summary["balanced"] and len(rows) == 8
        assert {(row["model_version"], row["thresholds_version"], row["run_id"]) for row in rows} == {
            (retuned["model_version"], retuned["thresholds_version"], "fresh-2")}
