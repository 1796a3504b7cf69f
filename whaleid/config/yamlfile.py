"""A YAML file whaleid is given (params.yaml, an overrides file) read as the hostile input it may be.

``yaml.safe_load`` never runs code, but it will expand an alias bomb (a few KB of ``&a [*a, *a, ...]`` nested ten
deep is a billion nodes to every reader that walks it), recurse until Python's stack gives out on a file nested
thousands deep, and keep the last of two equal keys without a word. :func:`read_yaml` bounds all three: the file's
size, the nesting depth, the node count with every alias expanded (a cycle counts forever and is stopped too), and
refuses a key given twice in one mapping (a duplicated params block too), naming both lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from whaleid.core.errors import ConfigError

MAX_BYTES = 1 << 20  # params.yaml is about 20 KB
MAX_DEPTH = 32  # params nest two levels deep
MAX_NODES = 200_000  # after alias expansion; params.yaml has about 600
MERGE = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader with a depth limit while composing and a duplicate-key check while constructing."""

    def __init__(self, stream: str, name: str) -> None:
        super().__init__(stream)
        self.name = name
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise ConfigError(f"{self.name}, line {line}: nested more than {MAX_DEPTH} levels deep.")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in first:
                raise ConfigError(
                    f"{self.name}, line {line}: {key!r} is given twice in one mapping (first on line {first[key]}); "
                    "keep one."
                )
            first[key] = line
        return super().construct_mapping(node, deep)


def _check_size(node: Node, name: str) -> None:
    """Count ``node``'s nodes with every alias expanded; stop past MAX_NODES."""
    stack, seen = [node], 0
    while stack:
        current = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise ConfigError(
                f"{name}: more than {MAX_NODES:,} values once its aliases (*name) are expanded; "
                "an alias bomb or a cycle, not a params file."
            )
        if isinstance(current, SequenceNode):
            stack.extend(current.value)
        elif isinstance(current, MappingNode):
            for pair in current.value:
                stack.extend(pair)


def parse_yaml(text: str, name: str = "<yaml>") -> Any:
    """``text`` parsed with the bounds above; ConfigError (one line, naming ``name``) for anything refused."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{name}: {len(text):,} characters; a params file is far smaller (limit {MAX_BYTES:,}).")
    loader = _Loader(text, name)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node, name)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ConfigError(f"{name}: nested too deep to read.") from None
    finally:
        loader.dispose()


def read_yaml(path: Path) -> Any:
    """The YAML file at ``path`` (see :func:`parse_yaml`); ConfigError if it is missing or refused."""
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found.")
    if path.stat().st_size > MAX_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size:,} bytes; a params file is far smaller (limit {MAX_BYTES:,}).")
    return parse_yaml(path.read_text(encoding="utf-8"), str(path))
