"""The dead-letter contract every stage keeps: a DoFn routes a record it rejects, as a dead letter with
its reason (`linnet_core.records.dead_letter`), to its tagged output DEAD_LETTER."""

DEAD_LETTER = "dead_letter"
