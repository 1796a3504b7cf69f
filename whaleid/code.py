"""Which source files a stage runs: the closure of its imports inside this repository.

The training resume fingerprint hashes exactly these files, and ``tests/test_dvc_yaml.py`` checks that every
stage in dvc.yaml lists exactly these files as its code deps, so DVC and the resume logic agree on "the code".
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("whaleid", "stages")


def _module_file(name: str, root: Path) -> Path | None:
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """Module names imported anywhere in ``path`` (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def code_files(module: str, root: Path = ROOT) -> list[Path]:
    """Sorted files (relative to ``root``) of ``module`` and of every in-repo module it imports, transitively.
    Package ``__init__`` files count only when they hold code."""
    start = _module_file(module, root)
    if start is None:
        raise ValueError(f"{module}: no such module under {root}")
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            found = _module_file(name, root)
            if found is not None and found not in seen:
                todo.append(found)
    files = {p for p in seen if p.name != "__init__.py" or p.read_text(encoding="utf-8").strip()}
    return sorted(p.relative_to(root) for p in files)
