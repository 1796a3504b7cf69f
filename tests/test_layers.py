"""The package's layers (docs/architecture.md, "Layers"): a module imports only from the layers below its own
and from its own subpackage, function-level imports included, so a library module that reaches into the pipeline
layer (params.yaml, artifact paths) fails here. Also: no module grows past the size a reader can hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from whaleid.pipeline.codedeps import ROOT, imports_of

# Low to high. model and retrieval share a rank: neither imports the other.
RANK = {"core": 0, "config": 1, "data": 2, "model": 3, "retrieval": 3, "rule": 4, "gallery": 5, "pipeline": 6,
        "cli": 7}  # fmt: skip
MAX_LINES = 350


def layer_of(path: Path, root: Path) -> str | None:
    parts = path.relative_to(root / "whaleid").parts
    return parts[0] if len(parts) > 1 else None  # whaleid/__init__.py sits above every layer


def violations(root: Path) -> list[str]:
    """One line per import that goes sideways or up: ``file: imports whaleid.X (layer L -> layer M)``."""
    out = []
    for path in sorted((root / "whaleid").rglob("*.py")):
        own = layer_of(path, root)
        if own is None:
            continue
        if own not in RANK:
            out.append(f"{path.relative_to(root)}: subpackage {own!r} has no layer (add it to RANK)")
            continue
        for name in sorted(imports_of(path)):
            parts = name.split(".")
            if parts[0] != "whaleid" or len(parts) < 2 or parts[1] == own or parts[1] not in RANK:
                continue
            if RANK[parts[1]] >= RANK[own]:
                out.append(f"{path.relative_to(root)}: imports {name} ({own} may not import {parts[1]})")
    return out


def test_every_import_goes_down_the_layers() -> None:
    assert violations(ROOT) == []


def test_a_library_module_importing_the_pipeline_is_caught(tmp_path: Path) -> None:
    for pkg in ("core", "retrieval", "pipeline"):
        (tmp_path / "whaleid" / pkg).mkdir(parents=True)
    (tmp_path / "whaleid/core/atomic.py").write_text("import os\n")
    (tmp_path / "whaleid/pipeline/paths.py").write_text("from whaleid.core.atomic import x\n")
    (tmp_path / "whaleid/retrieval/chain.py").write_text(
        "from whaleid.core import atomic\n\ndef f():\n    from whaleid.pipeline.paths import FOLDS\n"
    )
    (tmp_path / "whaleid/retrieval/x.py").write_text("import whaleid.retrieval.chain\n")  # its own layer: fine
    assert violations(tmp_path) == [
        "whaleid/retrieval/chain.py: imports whaleid.pipeline.paths (retrieval may not import pipeline)",
        "whaleid/retrieval/chain.py: imports whaleid.pipeline.paths.FOLDS (retrieval may not import pipeline)",
    ]


@pytest.mark.parametrize("path", sorted((ROOT / "whaleid").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_longer_than_a_reader_can_hold(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)}: {lines} lines; split it along its seams"
