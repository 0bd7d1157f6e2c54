"""The real `score` and `backfill` Dataflow jobs build offline; model staging; the deploy files.

`DataflowRunner` with `--dry_run=True` does everything short of staging and submitting: it runs the
Dataflow overrides, pickles every DoFn into the portable pipeline, builds the `setup.py` sdist that
workers install, and produces the job request. gs:// is the storage emulator (tests/gcs_emulator.py).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from model_dirs import write_stand_in_model

from pipelines import backfill, defaults
from pipelines.dataflow_submit import dataflow_flags, stage_model
from pipelines.usage import UsageError

BUCKET = "gs://linnet-dry-run"


def test_model_is_staged_per_content_version_with_its_manifest_last(tmp_path: Path):
    model = tmp_path / "model"
    version = write_stand_in_model(model)
    bucket = tmp_path / "bucket"

    uri = stage_model(str(model), str(bucket))
    assert uri == str(bucket / "models" / version)
    staged = sorted(str(path.relative_to(uri)) for path in Path(uri).rglob("*") if path.is_file())
    assert staged == ["calibration.json", "model.json", "saved_model/saved_model.pb",
                      "saved_model/variables/variables.index", "training_model.weights.h5"]
    assert stage_model(str(model), str(bucket)) == uri
    # Thresholds changed without a re-export: the folder no longer is the version model.json names.
    thresholds = json.loads((model / "calibration.json").read_text())
    (model / "calibration.json").write_text(json.dumps({**thresholds, "levels": [0.6] * 7}))
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


def test_worker_image_replaces_the_sdist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    flags = dataflow_flags("p-123456", "europe-west1", BUCKET, sdk_container_image="eu.gcr.io/p/linnet:1")
    assert "--sdk_location=container" in flags and not any(flag.startswith("--setup_file") for flag in flags)
    monkeypatch.setattr(defaults, "PROJECT_ROOT", tmp_path)  # an installed package: no checkout beside it
    with pytest.raises(UsageError, match="--sdk_container_image"):
        dataflow_flags("p-123456", "europe-west1", BUCKET)


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
    from pipelines.options import ModelOptions
    from pipelines.score import ScoreOptions

    scoring = argparse.ArgumentParser()
    ScoreOptions._add_argparse_args(scoring)
    ModelOptions._add_argparse_args(scoring)
    flags = set(PipelineOptions([]).get_all_options()) | {
        action.dest for parser in (scoring, backfill._parser()) for action in parser._actions}
    assert _template_parameters() <= flags


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    """A copy of the session's model and its training data (its calibration split held out, to retune on)."""
    root = tmp_path_factory.mktemp("dry_run")
    shutil.copytree(model_dir.parent, root, dirs_exist_ok=True)
    return root


@pytest.mark.emulator
@pytest.mark.subprocesses
def test_real_jobs_build_for_dataflow_and_a_retune_is_restaged(trained_model: Path):
    """`dataflow-submit --dry_run` stages the model by content version and builds the real score job; a
    retune (`tune-thresholds`) gives a new version, which the next dry run stages. The real score and
    backfill jobs (files and BigQuery) hold the staged gs:// model and no path of the launcher's machine,
    and workers install the project's sdist."""
    from gcs_emulator import run_scenario

    result = run_scenario(Path(__file__).with_name("dataflow_dry_run_scenario.py"), trained_model)
    assert result["submitted"] == [0, 0]
    assert result["staged_first"] == [result["before"]]
    assert result["after"] != result["before"]
    assert result["staged"] == sorted([result["before"], result["after"]])
    assert result["staged_thresholds"] == result["thresholds_version"] != "default"
    assert result["floors_in_model"]
    reads = {"score": "ReadProducts/", "backfill": "ReadProducts/",
             "score_bigquery": "ReadProducts/ReadRows/"}
    for job, read in reads.items():
        built = result[job]
        assert built["job_name"] == "linnet-dry-run" and built["batch"], job
        labels = set(built["labels"])
        for label in (read, "DeduplicateProducts/", "EmbedProducts/Embed/", "StoreContext/FirstPass/",
                      "StoreContext/SumPerStore/", "Categorize/RunInference/", "WriteTables/"):
            assert any(name.startswith(label) for name in labels), (job, label)
        assert built["pickled_fns"] > 10
        assert result["staged_uri"] in built["strings"], job  # the search reaches the model handler
        local = [s for s in built["strings"] if any(s.startswith(root) for root in result["local_roots"])]
        assert local == [], (job, local)
        for needed in ("setup.py", "requirements.txt", "pipelines/score.py", "pipelines/bigquery.py",
                       "linnet_core/config/sensitive_categories.json", "schemas/categorized.json"):
            assert needed in built["sdist"], (job, needed)
    assert any(name.startswith("AdvanceWatermark") for name in result["backfill"]["labels"])
    assert "WriteTables/Write[categorized]/Commit" in result["score_bigquery"]["labels"]
