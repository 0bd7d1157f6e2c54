"""Command-line usage errors: one clear line and exit status 2, with the closest valid flag.

Light on purpose (argparse only): `linnet` imports it before knowing which command runs.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import sys
from collections.abc import Iterable, Sequence
from typing import Any


class UsageError(ValueError):
    """A command line that cannot run as given (an unknown, misspelled or missing flag): exit 2."""


class ArgumentParser(argparse.ArgumentParser):
    """The parser of every `linnet` command: an unknown flag is a `UsageError` naming the closest
    valid one (a dropped misspelling would run with a default instead, e.g. today's partition), and
    abbreviations are never guessed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        self._given = list(args or [])
        return super().parse_known_args(args, namespace)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            raise UsageError(unknown_flags_message(unknown, self.flags()))
        return parsed

    def flags(self) -> list[str]:
        """Every option string this parser accepts."""
        return list(self._option_string_actions)

    def error(self, message: str) -> None:
        """argparse's own errors (a bad value, a missing flag) → exit 2; a missing flag that is
        really a misspelled one is reported as such."""
        unknown = [arg for arg in getattr(self, "_given", [])
                   if arg.startswith("--") and arg.split("=", 1)[0] not in self._option_string_actions]
        if unknown:
            raise UsageError(unknown_flags_message(unknown, self.flags()))
        raise UsageError(f"{message} (see {self.prog} --help)")


def unknown_flags_message(unknown: Sequence[str], known: Iterable[str]) -> str:
    """`unknown flag --partiton (did you mean --partition?)` for each unknown flag (values after
    it are not named again); a stray positional argument when there is no flag."""
    known = list(known)
    flags = [arg.split("=", 1)[0] for arg in unknown if arg.startswith("-")]
    if not flags:
        return f"unexpected argument(s): {' '.join(unknown)}"
    parts = []
    for flag in flags:
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
        parts.append(f"unknown flag {flag}" + (f" (did you mean {close[0]}?)" if close else ""))
    return "; ".join(parts)


@functools.cache
def _note_renamed(old: str, new: str) -> None:
    """Once per process: Beam parses a command line again for every view of its options."""
    print(f"linnet: {old} is deprecated, use {new}", file=sys.stderr)


class _RenamedFlag(argparse.Action):
    """An old spelling of a renamed flag: sets the new flag's value, with a note on stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        _note_renamed(str(option_string), self.new)
        setattr(namespace, self.dest, values)


def add_renamed_flag(parser: argparse.ArgumentParser, new: argparse.Action, old: str) -> None:
    """Keep `old`, the former name of the flag `new` (what `add_argument` returned), working as a
    hidden alias, so command lines and docs written before the rename still run."""
    parser.add_argument(old, action=_RenamedFlag, new=new.option_strings[0], dest=new.dest, type=new.type,
                        metavar=new.metavar, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
