"""The decision codes: the inference model's `decision` output and the categorized table's `decision`.

The SavedModel returns a code per product; categorized rows carry its name, `NAMES[code]`.
"""

ABSTAINED, BACKED_OFF, LEAF = 0, 1, 2
"""Not even level 1 cleared its threshold; the deepest ancestor that did; the whole decoded path did."""
NAMES = ("abstained", "backed_off", "leaf")
