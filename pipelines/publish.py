"""Publishing a folder's new content whole, on a local disk or on an object store (gs://).

One mechanism for every versioned output: the content is written into `DIR/versions/<id>/`, then
`DIR/CURRENT` (the id) is written last, in one step (a local pointer is written aside and renamed over
the old one; an object write is atomic already). Readers resolve `DIR` through `current_version`, so they
see the previous version or the new one, never half of one, and a failed write publishes nothing. The
store-context tables (`pipelines.store_context`) publish this way, and so does `build-training-data` on
an object store (`published`), where no folder can be renamed; a local training-data folder, which
readers open by its path, is written beside and renamed into place instead (`linnet_core.publish`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from apache_beam.io.filesystems import FileSystems

from linnet_core.publish import written_whole
from pipelines.partitions import delete_folder, new_attempt, write_atomically

CURRENT = "CURRENT"
VERSIONS = "versions"


def version_dir(directory: str, version: str) -> str:
    """Where version `version` of DIR is written."""
    return FileSystems.join(directory, VERSIONS, version)


def current_version(directory: str) -> str | None:
    """The version DIR/CURRENT names, or None before the first publish."""
    path = FileSystems.join(directory, CURRENT)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as handle:
        return handle.read().decode().strip() or None


def publish(directory: str, version: str) -> None:
    """Point DIR/CURRENT at `version`, in one step (the write a partition commit's journal gets too)."""
    write_atomically(FileSystems.join(directory, CURRENT), version.encode())


@contextlib.contextmanager
def published(output: str) -> Iterator[str]:
    """Yields the folder to write `output`'s new content into; it is published when the block ends and
    deleted instead when the block raises. On an object store the version published before stays (a
    reader that resolved it just before keeps a whole folder); older ones are deleted."""
    if "://" not in output:
        with written_whole(Path(output)) as staging:
            yield str(staging)
        return
    version, previous = new_attempt(), current_version(output)
    staging = version_dir(output, version)
    try:
        yield staging
    except BaseException:
        if FileSystems.exists(staging):
            delete_folder(staging)
        raise
    publish(output, version)
    prefix = FileSystems.join(output, VERSIONS, "")
    stored = {metadata.path[len(prefix):].split("/")[0]
              for metadata in FileSystems.match([f"{prefix}**"])[0].metadata_list}
    for old in sorted(stored - {version, previous}):
        delete_folder(version_dir(output, old))


def published_dir(output: str) -> str:
    """The folder holding `output`'s published content: the version its CURRENT names, or the folder
    itself (a local folder renamed into place, or one written before versions)."""
    version = current_version(output) if "://" in output else None
    return version_dir(output, version) if version else output
