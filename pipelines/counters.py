"""The Beam counters of a finished run, for run summaries (long stages log progress: linnet_core.progress)."""

from __future__ import annotations

from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult


def beam_counters(result: PipelineResult) -> dict[str, int]:
    """Every counter of a finished run, `namespace:name` → its committed value summed over steps."""
    totals: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter())["counters"]:
        key = f"{counter.key.metric.namespace}:{counter.key.metric.name}"
        totals[key] = totals.get(key, 0) + (counter.committed or 0)
    return dict(sorted(totals.items()))
