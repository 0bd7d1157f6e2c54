"""The dead-letter contract every stage keeps: a DoFn routes a record it rejects, as a dead letter with
its reason (`linnet_core.records.dead_letter`), to its tagged output DEAD_LETTER, and every composite
with rejects returns `Routed`, so a caller reads the same two fields whatever the stage."""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam

DEAD_LETTER = "dead_letter"


class Routed(NamedTuple):
    """A stage's records that went on, and the ones it rejected (dead-letter records with a reason)."""

    records: beam.PCollection
    dead_letter: beam.PCollection
