"""`linnet dataflow-submit`: stage the model to a bucket, then run `linnet score` (or `backfill`) on Dataflow.

Workers install LinNét from its `setup.py` sdist (`--setup_file`), or run a prebuilt image
(`--sdk_container_image`, see deploy/Dockerfile) that already holds it with CPU-only torch.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from apache_beam.io.filesystems import FileSystems

from linnet_core.model import MODEL_JSON
from linnet_core.model.version import directory_version
from pipelines import defaults
from pipelines.usage import ArgumentParser, UsageError

COPY_CHUNK_BYTES = 8 << 20


def stage_model(model_dir: str, bucket: str) -> str:
    """Copy a local model folder to `BUCKET/models/<model_version>/`; returns that URI.

    The version is the hash of the folder's content (`linnet_core.model.version`), so a retune (which
    re-exports) is staged anew. `model.json` is copied last, so a staged model is complete exactly when
    its `model.json` exists, and a version already staged is not copied again.

    Raises:
        FileNotFoundError: `model_dir` has no model.json (not a `linnet train` output).
        ValueError: model.json's version is not the hash of the folder's files (changed since export).
    """
    source = Path(model_dir)
    manifest = source / MODEL_JSON
    if not manifest.is_file():
        raise FileNotFoundError(f"{model_dir} is not a model folder: no {MODEL_JSON}")
    version = json.loads(manifest.read_text(encoding="utf-8")).get("model_version")
    content = directory_version(source)
    if version != content:
        raise ValueError(f"{model_dir}: model.json names version {version} but its files hash to "
                         f"{content}: re-export it (`linnet tune-thresholds` re-exports)")
    destination = FileSystems.join(bucket, "models", version)
    if FileSystems.exists(FileSystems.join(destination, MODEL_JSON)):
        return destination
    files = sorted(path for path in source.rglob("*") if path.is_file() and path != manifest)
    for path in [*files, manifest]:
        target = FileSystems.join(destination, *path.relative_to(source).parts)
        parent = FileSystems.split(target)[0]
        if not FileSystems.exists(parent):
            FileSystems.mkdirs(parent)
        # FileSystems.copy works within one filesystem only; this copies local → gs:// as well.
        with open(path, "rb") as reader, FileSystems.create(target) as writer:
            shutil.copyfileobj(reader, writer, COPY_CHUNK_BYTES)
    return destination


def dataflow_flags(project: str, region: str, bucket: str, job_name: str | None = None,
                   sdk_container_image: str | None = None) -> list[str]:
    """The Beam flags of a Dataflow run of this package (temp and staging under `bucket`).

    Raises:
        UsageError: no worker image and no checkout's setup.py to build one from (an installed package).
    """
    flags = ["--runner=DataflowRunner", f"--project={project}", f"--region={region}",
             f"--temp_location={FileSystems.join(bucket, 'tmp')}",
             f"--staging_location={FileSystems.join(bucket, 'staging')}"]
    if sdk_container_image:
        flags += [f"--sdk_container_image={sdk_container_image}", "--sdk_location=container"]
    else:
        setup = defaults.PROJECT_ROOT / "setup.py"
        if not setup.is_file():  # an installed package: there is no checkout to package for the workers
            raise UsageError(f"no setup.py at {defaults.PROJECT_ROOT} to package for the workers: give "
                             "--sdk_container_image (the worker image, deploy/Dockerfile)")
        flags.append(f"--setup_file={setup}")
    return flags + ([f"--job_name={job_name}"] if job_name else [])


def main(argv: list[str] | None = None) -> int:
    """Entry point of `linnet dataflow-submit`; flags it does not know go to the command it runs."""
    parser = ArgumentParser(prog="linnet dataflow-submit", description=__doc__)
    parser.add_argument("--project", default=os.environ.get("GOOGLE_CLOUD_PROJECT"), help="GCP project")
    parser.add_argument("--region", default="us-central1", help="Dataflow region")
    parser.add_argument("--bucket", required=True, help="gs://BUCKET[/PREFIX] for model, temp and staging")
    parser.add_argument("--model", default=str(defaults.OUTPUT / "model"), help="local model folder")
    parser.add_argument("--command", choices=("score", "backfill"), default="score",
                        help="what to run on Dataflow (backfill runs one Dataflow job per day)")
    parser.add_argument("--job_name", "--job-name", dest="job_name", default=None)
    parser.add_argument("--sdk_container_image", default=None,
                        help="prebuilt worker image (deploy/Dockerfile) instead of installing setup.py")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if not args.project:
        parser.error("--project is required (or set GOOGLE_CLOUD_PROJECT)")
    flags = dataflow_flags(args.project, args.region, args.bucket, args.job_name, args.sdk_container_image)
    model_uri = stage_model(args.model, args.bucket)
    print(f"model staged at {model_uri}", file=sys.stderr)
    from pipelines import cli

    return cli.main([args.command, *rest, f"--model={model_uri}", *flags])
