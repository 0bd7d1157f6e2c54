"""`linnet taxonomy`: print a JSON summary of a taxonomy file, or one node with its neighbours."""

from __future__ import annotations

import json
import sys

from linnet_core.taxonomy import Taxonomy, TaxonomyError
from pipelines import defaults
from pipelines.usage import ArgumentParser


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="linnet taxonomy", description=__doc__)
    parser.add_argument("--taxonomy", default=defaults.TAXONOMY, help="taxonomy-with-ids file")
    parser.add_argument("--locale", help="locale such as de-DE for localized names (en-US fallback)")
    parser.add_argument("--node", help="describe this node id")
    args = parser.parse_args(argv)
    try:
        locale_file = defaults.locale_file(args.taxonomy, args.locale) if args.locale else None
        taxonomy = Taxonomy.load(args.taxonomy, locale_file)
        result = taxonomy.describe(args.node) if args.node else taxonomy.summary()
    except (TaxonomyError, OSError) as error:
        print(f"linnet taxonomy: {error}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout, ensure_ascii=False, indent=2)
    print()
    return 0
