"""Run accounting: the one metrics namespace, the counters of a finished run, and the rule every pipeline
ends with: records in = records out + dead letters (long stages log progress: linnet_core.progress)."""

from __future__ import annotations

from typing import NamedTuple

from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult

NAMESPACE = "linnet"


class RecordsLostError(RuntimeError):
    """A run wrote fewer (or more) records than it read, counting its dead letters."""


def counter(name: str):
    """The Beam counter `name` in the project's one namespace."""
    return Metrics.counter(NAMESPACE, name)


def beam_counters(result: PipelineResult) -> dict[str, int]:
    """Every counter of a finished run, `namespace:name` → its committed value summed over steps."""
    totals: dict[str, int] = {}
    for found in result.metrics().query(MetricsFilter())["counters"]:
        key = f"{found.key.metric.namespace}:{found.key.metric.name}"
        totals[key] = totals.get(key, 0) + (found.committed or 0)
    return dict(sorted(totals.items()))


def committed(result: PipelineResult, name: str) -> int:
    """The committed value of counter `name` of a finished run, summed over steps."""
    counters = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return sum(found.committed or 0 for found in counters)


def records_in(result: PipelineResult) -> int:
    """The records a run read (`sources.product_source`: files or BigQuery), less those of other days
    that a day's run skips: what its outputs and dead letters must add up to."""
    return (committed(result, "records_read") + committed(result, "bigquery_rows_read")
            - committed(result, "records_other_days"))


class Accounting(NamedTuple):
    """What a run read, wrote and dead-lettered."""

    records_in: int
    records_out: int
    dead_letters: int

    @property
    def balanced(self) -> bool:
        """Every record read is written or dead-lettered, none twice."""
        return self.records_in == self.records_out + self.dead_letters

    def check(self, run: str) -> None:
        """Raises RecordsLostError unless balanced (call it after the run's summary is written)."""
        if not self.balanced:
            raise RecordsLostError(f"records lost in {run}: {self.records_in} in, {self.records_out} out, "
                                   f"{self.dead_letters} dead letters")
