"""The Google Product Taxonomy as a tree: parsing, validation, lookups and per-level class indexes.

The per-level index (nodes of a level ordered by numeric id) is the class index of each model head,
so it must never depend on file order or locale.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

PATH_SEPARATOR = " > "
_LINE = re.compile(r"^(\d+) - (\S.*)$")
_VERSION = re.compile(r"^#\s*Google_Product_Taxonomy_Version:\s*(\S+)")


class TaxonomyError(ValueError):
    """A taxonomy file or a lookup that does not fit the taxonomy."""


@dataclass(frozen=True)
class Node:
    """One category. `path` holds the en-US names from level 1 down to this node."""

    id: int
    path: tuple[str, ...]
    parent: int | None
    children: tuple[int, ...] = field(default=(), compare=False)

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def depth(self) -> int:
        return len(self.path)

    @property
    def full_path(self) -> str:
        return PATH_SEPARATOR.join(self.path)

    @property
    def is_leaf(self) -> bool:
        return not self.children


def parse_lines(path: str | Path) -> tuple[str | None, list[tuple[int, tuple[str, ...]]]]:
    """Read a `taxonomy-with-ids` file into (version, [(id, path parts)]) without building the tree.

    Raises:
        TaxonomyError: naming the file and line of any line that does not parse.
    """
    version = None
    entries: list[tuple[int, tuple[str, ...]]] = []
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = error.object[:error.start].count(b"\n") + 1
        byte = error.object[error.start]
        raise TaxonomyError(f"{path}:{line}: not UTF-8 text (byte 0x{byte:02x})") from None
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if line.startswith("#"):
            match = _VERSION.match(line)
            if match and version is None:
                version = match.group(1)
            continue
        match = _LINE.match(line)
        if not match:
            raise TaxonomyError(f"{path}:{number}: cannot parse line {line!r}")
        parts = tuple(part.strip() for part in match.group(2).split(">"))
        if any(not part for part in parts):
            raise TaxonomyError(f"{path}:{number}: empty category name in {line!r}")
        entries.append((int(match.group(1)), parts))
    return version, entries


class Taxonomy:
    """An immutable, validated taxonomy tree built from `taxonomy-with-ids` lines.

    Args:
        version: the version from the file header (e.g. "2021-09-21").
        entries: (id, path parts) pairs; parents must be listed by path.
        source: where the entries came from, for error messages.

    Raises:
        TaxonomyError: on duplicate ids or paths, or a node whose parent path is not in the file.
    """

    def __init__(self, version: str | None, entries: list[tuple[int, tuple[str, ...]]],
                 source: str = "<entries>") -> None:
        self.version = version or "unknown"
        self.source = source
        by_path: dict[tuple[str, ...], int] = {}
        for node_id, parts in entries:
            if parts in by_path:
                raise TaxonomyError(f"{source}: duplicate path {PATH_SEPARATOR.join(parts)!r} "
                                    f"(ids {by_path[parts]} and {node_id})")
            by_path[parts] = node_id
        children: dict[int, list[int]] = {}
        parents: dict[int, int | None] = {}
        for node_id, parts in entries:
            if node_id in parents:
                raise TaxonomyError(f"{source}: duplicate id {node_id}")
            parent = None
            if len(parts) > 1:
                parent = by_path.get(parts[:-1])
                if parent is None:
                    raise TaxonomyError(f"{source}: orphan node {node_id} "
                                        f"{PATH_SEPARATOR.join(parts)!r}: parent path not in taxonomy")
                children.setdefault(parent, []).append(node_id)
            parents[node_id] = parent
        self._nodes = {
            node_id: Node(node_id, parts, parents[node_id], tuple(sorted(children.get(node_id, ()))))
            for node_id, parts in entries
        }
        self._by_path = {PATH_SEPARATOR.join(parts).casefold(): node_id for parts, node_id in by_path.items()}
        self.max_depth = max((len(parts) for _, parts in entries), default=0)
        self._levels = [
            sorted(n.id for n in self._nodes.values() if n.depth == level)
            for level in range(1, self.max_depth + 1)
        ]
        self._level_index = {nid: i for level in self._levels for i, nid in enumerate(level)}
        self._names: dict[int, str] = {}
        self.locale = "en-US"

    @classmethod
    def load(cls, path: str | Path, locale_path: str | Path | None = None) -> Taxonomy:
        """Load a taxonomy file; `locale_path` adds localized names (any version, matched by id)."""
        version, entries = parse_lines(path)
        taxonomy = cls(version, entries, source=str(path))
        if locale_path is not None:
            taxonomy.add_locale(locale_path)
        return taxonomy

    def add_locale(self, locale_path: str | Path) -> None:
        """Attach localized names from a `taxonomy-with-ids.<locale>.txt` file of any version.

        Ids the locale file lacks keep their en-US name (older locale files miss newer ids).
        """
        _, entries = parse_lines(locale_path)
        self._names = {node_id: parts[-1] for node_id, parts in entries if node_id in self._nodes}
        match = re.search(r"taxonomy-with-ids\.([A-Za-z-]+)\.txt$", str(locale_path))
        self.locale = match.group(1) if match else str(locale_path)

    # -- lookups ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def __iter__(self):
        return iter(self._nodes.values())

    def node(self, node_id: int | str) -> Node:
        """The node with this id (int or numeric string). Raises TaxonomyError if unknown."""
        try:
            return self._nodes[int(node_id)]
        except (KeyError, ValueError, TypeError):
            raise TaxonomyError(f"unknown category id {node_id!r} in taxonomy {self.version}") from None

    def by_path(self, path: str) -> Node:
        """The node with this full path (`A > B > C`, case-insensitive). Raises TaxonomyError."""
        key = PATH_SEPARATOR.join(part.strip() for part in path.split(">")).casefold()
        if key not in self._by_path:
            raise TaxonomyError(f"unknown category path {path!r} in taxonomy {self.version}")
        return self._nodes[self._by_path[key]]

    def resolve(self, node_id: int | str, path: str | None = None) -> Node:
        """Look up a label by id and, when a path is given, check that the path names the same node.

        Raises:
            TaxonomyError: unknown id, or a path that does not match the id.
        """
        node = self.node(node_id)
        if path:
            given = PATH_SEPARATOR.join(part.strip() for part in path.split(">"))
            if given.casefold() != node.full_path.casefold():
                raise TaxonomyError(f"path {given!r} does not match id {node.id} ({node.full_path!r})")
        return node

    def parent(self, node_id: int) -> Node | None:
        parent = self.node(node_id).parent
        return None if parent is None else self._nodes[parent]

    def children(self, node_id: int) -> list[Node]:
        return [self._nodes[c] for c in self.node(node_id).children]

    def ancestors(self, node_id: int, include_self: bool = False) -> list[Node]:
        """Ancestors from level 1 downwards (root excluded)."""
        chain = []
        current = self.node(node_id)
        if include_self:
            chain.append(current)
        while current.parent is not None:
            current = self._nodes[current.parent]
            chain.append(current)
        return chain[::-1]

    def name(self, node_id: int) -> str:
        """The localized name where the locale has one, else the en-US name."""
        return self._names.get(int(node_id)) or self.node(node_id).name

    def localized_path(self, node_id: int) -> str:
        return PATH_SEPARATOR.join(self.name(n.id) for n in self.ancestors(node_id, include_self=True))

    @property
    def leaves(self) -> list[Node]:
        return [n for n in self._nodes.values() if n.is_leaf]

    @property
    def roots(self) -> list[Node]:
        return [self._nodes[i] for i in self._levels[0]] if self._levels else []

    # -- per-level class indexes ------------------------------------------------------------------
    def level_ids(self, level: int) -> list[int]:
        """Node ids at `level` (1-based) in class-index order (ascending id)."""
        self._check_level(level)
        return list(self._levels[level - 1])

    def level_sizes(self) -> list[int]:
        return [len(level) for level in self._levels]

    def level_index(self, node_id: int) -> int:
        """The class index of a node within its level's head."""
        node = self.node(node_id)
        return self._level_index[node.id]

    def node_at(self, level: int, index: int) -> Node:
        self._check_level(level)
        return self._nodes[self._levels[level - 1][index]]

    def level_labels(self, node_id: int, missing: int = -1) -> list[int]:
        """For levels 1..max_depth the class index of the node's ancestor there, else `missing`."""
        chain = [self._level_index[n.id] for n in self.ancestors(node_id, include_self=True)]
        return chain + [missing] * (self.max_depth - len(chain))

    def _check_level(self, level: int) -> None:
        if not 1 <= level <= self.max_depth:
            raise TaxonomyError(f"level {level} outside 1..{self.max_depth}")

    @property
    def fingerprint(self) -> str:
        """A hash of the tree's structure (ids and parents): equal trees give equal fingerprints."""
        digest = hashlib.sha256()
        for node_id in sorted(self._nodes):
            digest.update(f"{node_id}:{self._nodes[node_id].parent}\n".encode())
        return digest.hexdigest()[:16]

    def summary(self) -> dict:
        """The JSON summary the `linnet taxonomy` command prints."""
        return {
            "version": self.version,
            "locale": self.locale,
            "nodes": len(self),
            "leaves": len(self.leaves),
            "per_level": self.level_sizes(),
            "max_depth": self.max_depth,
            "fingerprint": self.fingerprint,
        }

    def describe(self, node_id: int | str) -> dict:
        """One node as JSON: id, path, localized path, depth, level index, ancestors, children."""
        node = self.node(node_id)
        return {
            "id": node.id,
            "path": node.full_path,
            "localized_path": self.localized_path(node.id),
            "depth": node.depth,
            "level_index": self.level_index(node.id),
            "ancestors": [{"id": a.id, "name": self.name(a.id)} for a in self.ancestors(node.id)],
            "children": [{"id": c.id, "name": self.name(c.id)} for c in self.children(node.id)],
        }
