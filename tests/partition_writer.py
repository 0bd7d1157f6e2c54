"""A run writing two tables of one partition, in its own process (test_partitions runs it).

`python partition_writer.py ROOT RUN_ID IDS [DIE_AT]`: ROOT's partition date=2026-11-24 of tables
`products` and `dead_letters` (one dead letter per product) become IDS. With DIE_AT the process
SIGKILLs itself there: `after_first_table` (one table swapped in, the other not) or `before_journal`
(before the commit point).
"""

from __future__ import annotations

import os
import signal
import sys

import apache_beam as beam

from pipelines import partitions

DAY = partitions.Partition.parse("2026-11-24")
SCHEMAS = {"products": "products", "dead_letters": "dead_letters"}


def _die_after(function):
    def dying(*args, **kwargs):
        function(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    return dying


def _die_before(function):
    def dying(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
    return dying


def main(root: str, run_id: str, ids: list[str], die_at: str | None = None) -> None:
    if die_at == "after_first_table":
        partitions.commit_partition = _die_after(partitions.commit_partition)
    elif die_at == "before_journal":
        partitions._write_json_atomically = _die_before(partitions._write_json_atomically)
    rows = [{"product_id": product_id, "title": product_id} for product_id in ids]
    with beam.Pipeline() as pipeline:
        products = pipeline | beam.Create(rows)
        dead = products | beam.Map(lambda row: {"product_id": row["product_id"], "stage": "test",
                                                "reason": "test", "error": "-", "raw": "{}"})
        tables = {"products": products, "dead_letters": dead}
        _ = tables | partitions.WritePartitions(root, SCHEMAS, DAY, run_id)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [i for i in sys.argv[3].split(",") if i], *sys.argv[4:])
