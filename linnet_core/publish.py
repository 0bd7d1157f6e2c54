"""Replacing an output folder whole: written aside, then renamed into place.

Readers (and `linnet run-local`, which takes `model.json` or `stats.json` as "stage done") see the
old folder or the new one, never a half-written one; a failed write leaves the old folder as it was.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

# The manifest of a committed table partition (`pipelines.partitions`), written last: the files it names
# are the partition, whatever else its folder holds (on object stores, where nothing renames a folder).
MANIFEST = "_SUCCESS"


def partial_dir(output: Path) -> Path:
    """A fresh hidden folder name beside `output` to write the new content into."""
    return output.with_name(f".{output.name}.partial-{uuid.uuid4().hex[:8]}")


def replace_dir(staging: Path, output: Path, aside: Path | None = None) -> None:
    """Replaces `output` with the finished `staging` folder by renames, so no reader sees half.

    The old `output` is renamed to `aside` (default: a fresh hidden name beside it), then deleted. A
    caller whose retry must clean up after a replace killed midway names `aside` after its attempt:
    the retry deletes what the killed one set aside (`pipelines.partitions` commits this way).
    """
    previous = aside or output.with_name(f".{output.name}.old-{uuid.uuid4().hex[:8]}")
    if output.exists():
        previous.parent.mkdir(parents=True, exist_ok=True)
        output.rename(previous)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(output)
    shutil.rmtree(previous, ignore_errors=True)


@contextlib.contextmanager
def written_whole(output: Path) -> Iterator[Path]:
    """Yields a folder to write `output`'s new content into; it becomes `output` when the block
    ends, and is deleted instead when the block raises."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = partial_dir(output)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_dir(staging, output)
