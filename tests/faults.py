"""Fault injection shared by the pipeline tests: a step that fails on one chosen product."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FailOn:
    """`beam.Map(FailOn("b"))` passes rows through and raises on the row whose product_id is "b"."""

    product_id: str | None

    def __call__(self, row: dict) -> dict:
        if row["product_id"] == self.product_id:
            raise RuntimeError(f"injected failure on {self.product_id}")
        return row
