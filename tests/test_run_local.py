"""run-local's stage runner: a stage's figures come from its own process, a failing stage stops the run."""

from __future__ import annotations

import os
import subprocess

import pytest

from pipelines.run_local import run_stage

pytestmark = pytest.mark.shared_data  # the stages read the shared taxonomy


def test_a_stage_reports_its_wall_cpu_and_peak_rss() -> None:
    figures = run_stage(["taxonomy", "--node", "1"])
    # CPU seconds are the child's (rounded to 0.1 s): more than none, at most every core's for its wall time.
    assert 0 < figures["cpu_s"] <= (figures["wall_s"] + 0.1) * (os.cpu_count() or 1)
    assert figures["peak_rss_mb"] > 10


def test_a_failing_stage_raises() -> None:
    with pytest.raises(subprocess.CalledProcessError):
        run_stage(["taxonomy", "--node", "not-a-node"])
