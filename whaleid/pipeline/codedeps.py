"""Which source files a stage runs: the closure of its imports inside this repository.

The training resume fingerprint hashes exactly these files, and ``tests/test_dvc_yaml.py`` checks that every
stage in dvc.yaml lists exactly these files as its code deps, so DVC and the resume logic agree on "the code".
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
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


def imports_of(path: Path) -> set[str]:
    """Module names imported anywhere in ``path`` (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _has_code(init: Path) -> bool:
    """Whether a package's ``__init__.py`` holds more than a docstring (only then can editing it change a run)."""
    body = ast.parse(init.read_text(encoding="utf-8")).body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]
    return bool(body)


def _packages_of(path: Path, root: Path) -> list[Path]:
    """The ``__init__.py`` of every package above module file ``path`` (Python runs each on import)."""
    parts = path.relative_to(root).parts[:-1]
    inits = [root.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts) + 1)]
    return [p for p in inits if p.is_file() and p != path]


def code_files(module: str, root: Path = ROOT) -> list[Path]:
    """Sorted files (relative to ``root``) of ``module`` and of every in-repo module it imports, transitively,
    with the packages above each. A package ``__init__`` counts only when it holds code beyond its docstring."""
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
        found = [_module_file(name, root) for name in imports_of(path)] + _packages_of(path, root)
        todo.extend(f for f in found if f is not None and f not in seen)
    files = {p for p in seen if p.name != "__init__.py" or _has_code(p)}
    return sorted(p.relative_to(root) for p in files)


def sync_dvc_yaml(path: Path) -> list[str]:
    """Rewrite the code deps (the ``.py`` entries) of every stage in dvc.yaml ``path`` to the closure of the
    module its ``cmd`` runs, keeping everything else as written; return the names of the stages changed."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[str] = []
    changed: list[str] = []
    stage, module, i = None, None, 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if indent == 2 and stripped.endswith(":") and not stripped.startswith("-"):
            stage = stripped[:-1]
        if stripped.startswith("cmd: python -m "):
            module = stripped.split()[3]
        if stripped.startswith("- ") and stripped.endswith(".py") and module is not None:
            item_indent = line[: line.index("-")]
            old = []
            while i < len(lines) and lines[i].strip().startswith("- ") and lines[i].strip().endswith(".py"):
                old.append(lines[i].strip()[2:])
                i += 1
            new = [str(p) for p in code_files(module, path.parent)]
            if new != old:
                changed.append(str(stage))
            out.extend(f"{item_indent}- {f}" for f in new)
            continue
        out.append(line)
        i += 1
    if changed:
        path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return changed


if __name__ == "__main__":  # python -m whaleid.pipeline.codedeps: bring dvc.yaml's code deps up to date
    print("updated code deps of:", ", ".join(sync_dvc_yaml(ROOT / "dvc.yaml")) or "nothing (already up to date)")
