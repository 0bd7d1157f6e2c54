"""The real `score` and `backfill` jobs built for Dataflow (`--dry_run=True`) with the model staged on the
GCS emulator; a retune in between (run by test_dataflow_graph in a child process).

`linnet dataflow-submit --dry_run=True` stages the model and builds the job without submitting it. The
graphs are then built again into pipelines this scenario keeps, so that every DoFn and CombineFn they
pickle can be unpickled and searched for strings that name a path of this machine.
"""

from __future__ import annotations

import datetime as dt
import json
import tarfile
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.internal import pickler
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import beam_runner_api_pb2

from pipelines import backfill, cli, dataflow_submit, defaults, score

BUCKET = "gs://linnet-test"
DAY = dt.date(2026, 11, 24)


def _strings(value: Any, seen: set[int], depth: int = 0) -> Iterator[str]:
    """Every string reachable from `value` through containers, object attributes and closures."""
    if depth > 12 or id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key, seen, depth + 1)
            yield from _strings(item, seen, depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from _strings(item, seen, depth + 1)
    elif isinstance(value, types.FunctionType):
        for cell in value.__closure__ or ():
            yield from _strings(cell.cell_contents, seen, depth + 1)
        yield from _strings(value.__defaults__, seen, depth + 1)
    elif isinstance(value, (type, types.ModuleType, types.CodeType, types.BuiltinFunctionType)):
        return
    elif hasattr(value, "__dict__"):
        yield from _strings(vars(value), seen, depth + 1)


def pickled_strings(proto: beam_runner_api_pb2.Pipeline) -> tuple[int, set[str]]:
    """(how many Python DoFns and CombineFns the job pickles, the strings they hold)."""
    found, count = set(), 0
    for transform in proto.components.transforms.values():
        spec = transform.spec
        if spec.urn == common_urns.primitives.PAR_DO.urn:
            fn = beam_runner_api_pb2.ParDoPayload.FromString(spec.payload).do_fn
        elif spec.urn == common_urns.composites.COMBINE_PER_KEY.urn:
            fn = beam_runner_api_pb2.CombinePayload.FromString(spec.payload).combine_fn
        else:
            continue
        if fn.urn in (python_urns.PICKLED_DOFN_INFO, python_urns.PICKLED_COMBINE_FN):
            count += 1
            found.update(_strings(pickler.loads(fn.payload), set()))
    return count, found


def _sdist_members(proto: beam_runner_api_pb2.Pipeline) -> list[str]:
    """The files of the sdist workers install (`workflow.tar.gz`), relative to its root folder."""
    for environment in proto.components.environments.values():
        for dependency in environment.dependencies:
            role = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dependency.role_payload)
            if role.staged_name == "workflow.tar.gz":
                path = beam_runner_api_pb2.ArtifactFilePayload.FromString(dependency.type_payload).path
                with tarfile.open(path) as sdist:
                    return sorted(name.split("/", 1)[1] for name in sdist.getnames() if "/" in name)
    return []


def _job(argv: list[str], day: dt.date, backfill_days: bool) -> dict:
    """Build one Dataflow job (dry run) into a pipeline kept here: its request, labels, the sdist
    workers install and the strings its functions pickle."""
    pipelines: list[beam.Pipeline] = []

    def score_into_kept_pipeline(day: dt.date, scoring_argv: list[str]) -> dict:
        options = [*scoring_argv, f"--partition={day.isoformat()}"]
        pipelines.append(beam.Pipeline(options=PipelineOptions(options)))
        return score.run(options, test_pipeline=pipelines[-1], only_updated_on_day=True)

    if backfill_days:
        assert backfill.main(["--since", day.isoformat(), "--until", day.isoformat(), *argv],
                             score_partition=score_into_kept_pipeline) == 0
    else:
        pipelines.append(beam.Pipeline(options=PipelineOptions(argv)))
        score.run([*argv, f"--partition={day.isoformat()}"], test_pipeline=pipelines[-1])
    runner = pipelines[-1].runner
    proto = runner.proto_pipeline
    count, strings = pickled_strings(proto)
    return {"labels": sorted(t.unique_name for t in proto.components.transforms.values()),
            "pickled_fns": count, "strings": sorted(strings), "job_name": runner.job.proto.name,
            "batch": runner.job.proto.type_ == runner.job.proto.type_.JOB_TYPE_BATCH,
            "sdist": _sdist_members(proto)}


def _staged_versions() -> list[str]:
    manifests = FileSystems.match([f"{BUCKET}/models/*/model.json"])[0].metadata_list
    return sorted(json.loads(FileSystems.open(m.path).read())["model_version"] for m in manifests)


def main(workdir: str) -> dict:
    model, data = Path(workdir, "model"), Path(workdir, "data")
    scoring = ["--input", f"{BUCKET}/products/*.parquet", "--output", f"{BUCKET}/out"]
    submit = ["--project=linnet-test", "--region=europe-west1", f"--bucket={BUCKET}", f"--model={model}",
              "--dry_run=True", *scoring, f"--partition={DAY.isoformat()}"]
    before = json.loads((model / "model.json").read_text())["model_version"]
    submitted = [cli.main(["dataflow-submit", *submit])]
    staged_first = _staged_versions()
    # The retune: calibrate the model itself on the calibration split and re-export it.
    assert cli.main(["tune-thresholds", "--model", str(model), "--data", str(data), "--folds", "0",
                     "--target-precision", "0.5"]) == 0
    after = json.loads((model / "model.json").read_text())
    submitted.append(cli.main(["dataflow-submit", *submit]))
    staged_uri = f"{BUCKET}/models/{after['model_version']}"
    flags = [f"--model={staged_uri}", "--dry_run=True",
             *dataflow_submit.dataflow_flags("linnet-test", "europe-west1", BUCKET, "linnet-dry-run")]
    bigquery = ["--query=SELECT * FROM `linnet-test.shop.products`", "--output_dataset=linnet-test.shop"]
    return {
        "before": before, "after": after["model_version"], "thresholds_version": after["thresholds_version"],
        "submitted": submitted, "staged_first": staged_first, "staged": _staged_versions(),
        "staged_thresholds": json.loads(FileSystems.open(f"{staged_uri}/calibration.json").read())["version"],
        "floors_in_model": (model / "sensitive_categories.json").is_file(),
        "score": _job([*scoring, *flags], DAY, backfill_days=False),
        "backfill": _job([*scoring, *flags], DAY, backfill_days=True),
        "score_bigquery": _job([*bigquery, *flags], DAY, backfill_days=False),
        "local_roots": [str(Path(workdir).resolve()), str(defaults.PROJECT_ROOT), str(defaults.SHARED_DATA),
                        str(Path.home())],
        "staged_uri": staged_uri,
    }
