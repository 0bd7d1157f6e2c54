"""The backfill watermark: the last day whose partitions are committed, kept in one small JSON file.

It only moves forward one day at a time, after that day's partition is committed, so every day up to
the watermark is done and `linnet backfill --incremental` starts on the day after it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem

LOGGER = logging.getLogger(__name__)


class WatermarkError(ValueError):
    """The stored watermark cannot be read."""


class Watermark:
    """A watermark file, local or on any Beam filesystem (gs://).

    Writes are atomic: a local file is written beside and renamed over the old one; an object store
    replaces an object in one step when its upload completes.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def read(self) -> dt.date | None:
        """The last committed day, or None before the first.

        Raises:
            WatermarkError: the file exists but is not a watermark.
        """
        state = self.state()
        return dt.date.fromisoformat(state["day"]) if state else None

    def state(self) -> dict[str, Any] | None:
        """The whole stored record (day, run_id, updated_at), or None before the first."""
        if not FileSystems.exists(self.path):
            return None
        with FileSystems.open(self.path) as handle:
            text = handle.read().decode("utf-8")
        try:
            state = json.loads(text)
            dt.date.fromisoformat(state["day"])
        except (ValueError, KeyError, TypeError) as error:
            raise WatermarkError(f"{self.path} is not a watermark file: {error}") from None
        return state

    def advance(self, day: dt.date, run_id: str | None = None) -> dt.date:
        """Record `day` as committed if it is the day after the watermark (or the first day).

        A day at or before the watermark (a rerun) leaves it; a day past the next one leaves it too
        (the days between are not known to be done) and is logged. Returns the watermark after.
        """
        current = self.read()
        if current is not None and day != current + dt.timedelta(days=1):
            if day > current:
                LOGGER.warning("watermark %s not advanced to %s: the days between are not committed",
                               current, day)
            return current
        self._write({"day": day.isoformat(), "run_id": run_id,
                     "updated_at": dt.datetime.now(dt.UTC).isoformat()})
        return day

    def _write(self, state: dict[str, Any]) -> None:
        payload = json.dumps(state, indent=2, sort_keys=True).encode("utf-8")
        if not isinstance(FileSystems.get_filesystem(self.path), LocalFileSystem):
            with FileSystems.create(self.path, mime_type="application/json") as handle:
                handle.write(payload)
            return
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        temporary = os.path.join(folder, f".{os.path.basename(self.path)}.{uuid.uuid4().hex}")
        with open(temporary, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)


class AdvanceWatermarkFn(beam.DoFn):
    """Advances the watermark to `day` once every partition of the day is committed (one element in)."""

    def __init__(self, path: str, day: dt.date, run_id: str | None) -> None:
        self.path = path
        self.day = day
        self.run_id = run_id

    def process(self, manifests: list[dict[str, Any]]) -> Iterator[str]:
        yield Watermark(self.path).advance(self.day, self.run_id).isoformat()


class AdvanceWatermark(beam.PTransform):
    """Manifests of the day's committed partitions → the watermark advanced to `day` (its new value).

    For jobs launched without a waiting driver (Flex Templates), so the job itself moves the watermark
    after its commits; `linnet backfill` advancing it again afterwards is a no-op.
    """

    def __init__(self, path: str, day: dt.date, run_id: str | None = None) -> None:
        super().__init__()
        self.advance_fn = AdvanceWatermarkFn(path, day, run_id)

    def expand(self, manifests: beam.PCollection) -> beam.PCollection:
        return (
            manifests
            | "AllCommitted" >> beam.combiners.ToList()
            | "Advance" >> beam.ParDo(self.advance_fn)
        )
