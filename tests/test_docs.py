"""docs/architecture.md matches the code: every library module is in its table, and every module it names exists."""

from __future__ import annotations

import re

from whaleid.pipeline.codedeps import ROOT

DOC = (ROOT / "docs/architecture.md").read_text()


def test_every_module_is_listed() -> None:
    modules = sorted(
        p.relative_to(ROOT / "whaleid").with_suffix("").as_posix()
        for p in (ROOT / "whaleid").rglob("*.py")
        if p.name != "__init__.py"
    )
    missing = [m for m in modules if f"| `{m}` |" not in DOC]
    assert not missing, f"docs/architecture.md does not list {missing}"


def test_every_listed_module_exists() -> None:
    listed = re.findall(r"^\| `([a-z_]+/[a-z_]+)` \|", DOC, re.M)
    assert listed and all((ROOT / "whaleid" / f"{m}.py").is_file() for m in listed), listed


def test_relative_links_in_the_readme_and_docs_resolve() -> None:
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_source_files_the_docs_name_exist() -> None:
    missing = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for path in re.findall(r"\b((?:whaleid|stages|bench|tests)/[\w/]+\.py)\b", page.read_text()):
            if not (ROOT / path).is_file():
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, missing
