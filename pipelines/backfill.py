"""`linnet backfill`: score products day by day by `updated_at`, committing one partition per day.

`--since DATE --until DATE` scores a fixed range; `--incremental` starts the day after the stored
watermark and ends yesterday (UTC). Each day is one scoring run (`score_partition`); the watermark
advances only after that day's partition is committed, so a failed night is resumed, not skipped,
and rerunning a day replaces its partition.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipelines.partitions import new_attempt
from pipelines.usage import ArgumentParser, UsageError
from pipelines.watermark import Watermark

LOGGER = logging.getLogger(__name__)
DEFAULT_SCORER = "pipelines.score:score_partition"
WATERMARK_FILE = "_watermark.json"

ScorePartition = Callable[[dt.date, list[str]], dict[str, Any]]
"""Scores the products updated on a day and commits partition `date=DAY`; returns its manifest.

The second argument is the scoring flags (input, model, output, Beam options) passed through, plus
`--watermark=PATH` when the backfill keeps one: the job should then end with `AdvanceWatermark`, so
the watermark moves even when nothing waits for the job (Flex Template launches).
"""


def days_between(since: dt.date, until: dt.date) -> list[dt.date]:
    """Every day from `since` to `until`, both included."""
    return [since + dt.timedelta(days=offset) for offset in range((until - since).days + 1)]


def plan_days(since: dt.date | None, until: dt.date | None, watermark: dt.date | None,
              incremental: bool, today: dt.date) -> list[dt.date]:
    """The days a backfill scores.

    Incremental: from the day after the watermark (or `since` before the first run) through `until`,
    by default yesterday, as today is not over. Otherwise exactly `since` through `until`.

    Raises:
        ValueError: a missing bound, or `since` after `until`.
    """
    if incremental:
        since = watermark + dt.timedelta(days=1) if watermark else since
        if since is None:
            raise ValueError("--incremental without a stored watermark needs --since for the first run")
        until = until or today - dt.timedelta(days=1)
        return days_between(since, until) if since <= until else []
    if since is None or until is None:
        raise ValueError("give --since and --until, or --incremental")
    if since > until:
        raise ValueError(f"--since {since} is after --until {until}")
    return days_between(since, until)


def load_scorer(spec: str) -> ScorePartition:
    """The `module:function` named by `spec`, imported now."""
    module_name, _, function_name = spec.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def backfill(days: list[dt.date], score_partition: ScorePartition, scoring_argv: list[str],
             watermark: Watermark | None, run_id: str) -> Iterator[dict[str, Any]]:
    """Score each day in order, advancing the watermark after each committed day; yields per day.

    Stops at the first failing day (its exception propagates): the days after it would leave a gap.
    """
    for day in days:
        LOGGER.info("backfill %s: scoring %s", run_id, day)
        manifest = score_partition(day, list(scoring_argv))
        # A dry run (`--dry_run`: the job built, not run) committed nothing.
        mark = watermark.advance(day, run_id) if watermark and not manifest.get("dry_run") else None
        yield {"day": day.isoformat(), "manifest": manifest, "watermark": mark and mark.isoformat()}


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def _parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="linnet backfill", description=__doc__,
        epilog="Other flags (--input/--input-table, --model, --output/--output-table, Beam options) "
               "go to each day's scoring run.")
    parser.add_argument("--since", type=_date, help="first day (UTC) to score")
    parser.add_argument("--until", type=_date, help="last day to score (incremental default: yesterday)")
    parser.add_argument("--incremental", action="store_true",
                        help="start the day after the stored watermark")
    parser.add_argument("--watermark", help=f"watermark file (default: OUTPUT/{WATERMARK_FILE})")
    parser.add_argument("--max_days", "--max-days", dest="max_days", type=int, default=None,
                        help="score at most this many days in this run (the oldest first)")
    parser.add_argument("--scorer", default=DEFAULT_SCORER, help="module:function scoring one day")
    parser.add_argument("--backfill_run_id", "--backfill-run-id", dest="run_id", default=None,
                        help="id recorded with the watermark (default: a timestamp)")
    return parser


def _watermark_path(given: str | None, scoring_argv: list[str]) -> str | None:
    if given:
        return given
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--output")
    folder = output.parse_known_args(scoring_argv)[0].output
    return FileSystems.join(folder, WATERMARK_FILE) if folder else None


def main(argv: list[str] | None = None, score_partition: ScorePartition | None = None,
         today: dt.date | None = None) -> int:
    """Entry point of `linnet backfill`; `score_partition` and `today` are injectable for tests."""
    args, scoring_argv = _parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    path = _watermark_path(args.watermark, scoring_argv)
    if args.incremental and path is None:
        print("linnet backfill: --incremental needs --watermark or --output", file=sys.stderr)
        return 2
    watermark = Watermark(path) if path else None
    try:
        days = plan_days(args.since, args.until, watermark.read() if watermark else None,
                         args.incremental, today or dt.datetime.now(dt.UTC).date())
    except ValueError as error:
        print(f"linnet backfill: {error}", file=sys.stderr)
        return 2
    days = days[:args.max_days] if args.max_days is not None else days
    scoring_argv += [f"--watermark={path}"] if path else []
    scorer = score_partition or load_scorer(args.scorer)
    run_id = args.run_id or f"backfill-{new_attempt()}"
    done: list[dict[str, Any]] = []
    status = 0
    try:
        for day_done in backfill(days, scorer, scoring_argv, watermark, run_id):
            done.append(day_done)
    except UsageError:  # the scoring flags are wrong for every day: one line, exit 2
        raise
    except Exception:  # noqa: BLE001 - reported below and by the exit code; the watermark stays put
        LOGGER.exception("backfill %s failed after %d day(s)", run_id, len(done))
        status = 1
    failed = days[len(done)].isoformat() if status else None
    json.dump({"run_id": run_id, "days": done, "failed_day": failed}, sys.stdout, indent=2, default=str)
    print()
    return status
