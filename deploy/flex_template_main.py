"""Flex Template entry point: one Dataflow scoring job for one day.

Without `--since`/`--until` it scores the day after the stored watermark (a nightly run catches up one
day per launch); the job advances the watermark after its commits. Flags are the template parameters.
"""

from __future__ import annotations

import logging
import sys

from pipelines import backfill


def template_argv(parameters: list[str]) -> list[str]:
    """`linnet backfill` arguments for one launch: one day, incremental unless a day is named."""
    explicit = any(flag.startswith(("--since", "--until")) for flag in parameters)
    return ["--max_days=1", *([] if explicit else ["--incremental"]), *parameters]


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    sys.exit(backfill.main(template_argv(sys.argv[1:])))
