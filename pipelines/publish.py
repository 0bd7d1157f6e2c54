"""Publishing an output folder whole, on a local disk or on an object store (gs://).

Local folders are written beside and renamed into place (`linnet_core.publish`). An object store cannot
rename a folder, so there the content goes into a version folder `OUTPUT/_versions/<attempt>/`, and the
manifest `OUTPUT/_SUCCESS` naming it is written last (one atomic object write), as partitions commit
(`pipelines.partitions`). Readers resolve the folder through `published_dir`: they see the previous
version or the new one, never half of one, and a failed write leaves the previous version published.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from apache_beam.io.filesystems import FileSystems

from linnet_core.publish import MANIFEST, written_whole
from pipelines.partitions import delete_folder, new_attempt, read_manifest, write_json

VERSIONS = "_versions"


@contextlib.contextmanager
def published(output: str) -> Iterator[str]:
    """Yields the folder to write `output`'s new content into; it is published when the block ends
    and deleted instead when the block raises. On an object store the version published before stays
    (a reader that resolved it just before keeps a whole folder); older ones are deleted."""
    if "://" not in output:
        with written_whole(Path(output)) as staging:
            yield str(staging)
        return
    version = f"{VERSIONS}/{new_attempt()}"
    staging = FileSystems.join(output, version)
    try:
        yield staging
    except BaseException:
        if FileSystems.exists(staging):
            delete_folder(staging)
        raise
    previous = read_manifest(output) or {}
    write_json(FileSystems.join(output, MANIFEST),
               {"version": version, "published_at": dt.datetime.now(dt.UTC).isoformat()})
    prefix = FileSystems.join(output, VERSIONS, "")
    versions = {meta.path[len(prefix):].split("/")[0]
                for meta in FileSystems.match([f"{prefix}**"])[0].metadata_list}
    for old in sorted(versions - {Path(name).name for name in (version, previous.get("version", ""))}):
        delete_folder(FileSystems.join(output, VERSIONS, old))


def published_dir(output: str) -> str:
    """The folder holding `output`'s published content: on an object store the version its manifest
    names (the folder itself for one written before versions); a local folder is itself."""
    if "://" not in output:
        return output
    manifest = read_manifest(output)
    return FileSystems.join(output, manifest["version"]) if manifest and "version" in manifest else output
