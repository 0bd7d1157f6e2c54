"""The Dataflow job of a scoring-shaped pipeline builds offline: options, packaging and graph are valid.

`DataflowRunner` with `--dry_run=True` does everything short of staging and submitting: it runs the
Dataflow overrides, pickles every DoFn into the portable pipeline, builds the `setup.py` sdist that
workers install, and produces the job request. Nothing here touches the network.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import importlib.util
import json
import re
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions
from apache_beam.portability.api import beam_runner_api_pb2
from model_dirs import write_stand_in_model

from pipelines import backfill
from pipelines import bigquery as bq
from pipelines.dataflow_submit import dataflow_flags, stage_model
from pipelines.io import DEAD_LETTER, PRODUCTS, ReadProducts
from pipelines.partitions import Partition, WritePartition

DAY = dt.date(2026, 11, 24)
BUCKET = "gs://linnet-dry-run"


class LengthModelHandler(ModelHandler[dict, dict, Any]):
    """A stand-in model (title length) with the same RunInference shape as the categorizer."""

    def load_model(self) -> Any:
        return len

    def run_inference(self, batch: Sequence[dict], model: Any,
                      inference_args: dict | None = None) -> Iterable[PredictionResult]:
        return [PredictionResult(record, model(record.get("title") or "")) for record in batch]


def to_row(result: PredictionResult) -> dict:
    return {"product_id": result.example["product_id"], "depth": result.inference}


def build(pipeline: beam.Pipeline) -> None:
    connection = bq.BigQueryConnection("linnet-demo")
    from_files = pipeline | "ReadProducts" >> ReadProducts(f"{BUCKET}/products/*.parquet")
    from_table = pipeline | "ReadProductsFromBigQuery" >> bq.ReadProductsFromBigQuery(
        connection, table="linnet-demo.shop.products", day=DAY)
    products = (from_files[PRODUCTS], from_table[PRODUCTS]) | "MergeProducts" >> beam.Flatten()
    dead = (from_files[DEAD_LETTER], from_table[DEAD_LETTER]) | "MergeDeadLetters" >> beam.Flatten()
    rows = (
        products
        | "RunInference" >> RunInference(LengthModelHandler())
        | "ToRow" >> beam.Map(to_row)
    )
    _ = rows | "WriteCategorized" >> WritePartition(f"{BUCKET}/out", "categorized", Partition.for_day(DAY))
    _ = rows | "WriteCategorizedTable" >> bq.WriteBigQueryPartition(
        connection, "linnet-demo.shop.categorized", "categorized", DAY, f"{BUCKET}/tmp")
    _ = dead | "WriteDeadLetters" >> WritePartition(f"{BUCKET}/out", "dead_letters", Partition.for_day(DAY))


@pytest.fixture(scope="module")
def dry_run() -> tuple[Any, beam_runner_api_pb2.Pipeline, PipelineOptions]:
    flags = dataflow_flags("linnet-demo", "us-central1", BUCKET, job_name="linnet-score-dry-run")
    options = PipelineOptions([*flags, "--dry_run=True", "--machine_type=n2-standard-4",
                               "--max_num_workers=4"])
    pipeline = beam.Pipeline(options=options)
    build(pipeline)
    result = pipeline.run()
    return result.job, pipeline.runner.proto_pipeline, options


def test_job_request_is_built(dry_run):
    job, _, options = dry_run
    assert job.proto.name == "linnet-score-dry-run"
    assert job.proto.type_ == job.proto.type_.JOB_TYPE_BATCH
    assert options.view_as(SetupOptions).setup_file.endswith("setup.py")


def test_workers_install_the_project_from_its_sdist(dry_run):
    _, proto, _ = dry_run
    staged = {}
    for environment in proto.components.environments.values():
        assert environment.urn == "beam:env:docker:v1"
        for dependency in environment.dependencies:
            path = beam_runner_api_pb2.ArtifactFilePayload.FromString(dependency.type_payload).path
            name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dependency.role_payload)
            staged[name.staged_name] = path
    assert Path(staged["workflow.tar.gz"]).name == "linnet-0.1.0.tar.gz"
    with tarfile.open(staged["workflow.tar.gz"]) as sdist:
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for needed in ("setup.py", "requirements.txt", "pipelines/bigquery.py", "pipelines/partitions.py",
                   "linnet_core/records.py", "schemas/categorized.json", "schemas/dead_letters.json"):
        assert needed in members


def test_graph_has_the_stable_labels(dry_run):
    _, proto, _ = dry_run
    labels = {transform.unique_name for transform in proto.components.transforms.values()}
    for label in ("ReadProducts", "ReadProductsFromBigQuery/ReadRows/OpenReadSession", "RunInference",
                  "WriteCategorized/Commit", "WriteCategorizedTable/Commit", "WriteDeadLetters/Commit"):
        assert label in labels


def test_model_is_staged_per_content_version_with_its_manifest_last(tmp_path: Path):
    model = tmp_path / "model"
    version = write_stand_in_model(model)
    bucket = tmp_path / "bucket"

    uri = stage_model(str(model), str(bucket))
    assert uri == str(bucket / "models" / version)
    staged = sorted(str(path.relative_to(uri)) for path in Path(uri).rglob("*") if path.is_file())
    assert staged == ["model.json", "saved_model/saved_model.pb", "saved_model/variables/variables.index",
                      "thresholds.json", "training_model.weights.h5"]
    assert stage_model(str(model), str(bucket)) == uri
    # Thresholds changed without a re-export: the folder no longer is the version model.json names.
    thresholds = json.loads((model / "thresholds.json").read_text())
    (model / "thresholds.json").write_text(json.dumps({**thresholds, "levels": [0.6] * 7}))
    with pytest.raises(ValueError, match="re-export"):
        stage_model(str(model), str(bucket))
    # A re-export (what a retune does) names new content: it is staged beside the old version.
    retuned = write_stand_in_model(model, level_threshold=0.6)
    assert retuned != version
    assert stage_model(str(model), str(bucket)) == str(bucket / "models" / retuned)
    assert (bucket / "models" / retuned / "saved_model" / "saved_model.pb").read_bytes() == b"graph 0.6"
    assert (Path(uri) / "saved_model" / "saved_model.pb").read_bytes() == b"graph 0.5"
    with pytest.raises(FileNotFoundError, match="model.json"):
        stage_model(str(tmp_path / "bucket"), str(bucket))


def test_worker_image_replaces_the_sdist():
    flags = dataflow_flags("p-123456", "europe-west1", BUCKET, sdk_container_image="eu.gcr.io/p/linnet:1")
    assert "--sdk_location=container" in flags and not any(flag.startswith("--setup_file") for flag in flags)


DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _template_parameters() -> set[str]:
    metadata = json.loads((DEPLOY / "flex-template" / "metadata.json").read_text())
    return {parameter["name"] for parameter in metadata["parameters"]}


def _airflow_parameters() -> set[str]:
    tree = ast.parse((DEPLOY / "airflow" / "linnet_nightly.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "parameters":
                    return {item.value for item in value.keys if isinstance(item, ast.Constant)} | {
                        name.value for inner in value.values if isinstance(inner, ast.Dict)
                        for name in inner.keys if isinstance(name, ast.Constant)}
    raise AssertionError("the DAG passes no parameters")


def test_schedulers_pass_only_template_parameters():
    launch = json.loads((DEPLOY / "scheduler" / "launch-body.json").read_text())
    scheduler = set(launch["launchParameter"]["parameters"])
    assert scheduler <= _template_parameters()
    assert {"input", "model", "output", "since", "until"} <= _airflow_parameters() <= _template_parameters()
    backfill_flags = {option.lstrip("-") for action in backfill._parser()._actions
                      for option in action.option_strings}
    assert {"since", "until", "watermark"} <= backfill_flags


def test_dockerfile_copies_what_exists_and_runs_the_template_main():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    root = DEPLOY.parent
    copies = re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, flags=re.MULTILINE)
    for sources in copies:
        for source in sources.split():
            assert (root / source).exists(), source
    main_file = re.search(r"FLEX_TEMPLATE_PYTHON_PY_FILE=/template/(\S+)", dockerfile).group(1)
    assert (root / main_file).is_file()


def test_template_launch_scores_one_day():
    spec = importlib.util.spec_from_file_location("flex_template_main", DEPLOY / "flex_template_main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.template_argv(["--output=gs://b/out"]) == ["--max_days=1", "--incremental", "--output=gs://b/out"]
    assert module.template_argv(["--since=2026-11-24", "--until=2026-11-24"]) == [
        "--max_days=1", "--since=2026-11-24", "--until=2026-11-24"]


def test_template_parameters_are_flags_of_the_template_command():
    from pipelines.score import ScoreOptions

    scoring = argparse.ArgumentParser()
    ScoreOptions._add_argparse_args(scoring)
    flags = set(PipelineOptions([]).get_all_options()) | {
        action.dest for parser in (scoring, backfill._parser()) for action in parser._actions}
    assert _template_parameters() <= flags
