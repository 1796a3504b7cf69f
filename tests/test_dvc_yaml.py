"""dvc.yaml against the code: every stage lists exactly the files it imports (and the training resume
fingerprint hashes the same files); per-model stages share their params and deps; stage scripts stay thin."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from whaleid.pipeline.codedeps import ROOT, code_files
from whaleid.pipeline.members import training_code

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _definition(name: str) -> dict:
    stage = STAGES[name]
    return stage["do"] if "foreach" in stage else stage


def _code_deps(stage: dict) -> list[str]:
    return sorted(d for d in stage["deps"] if d.endswith(".py"))


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_the_import_closure(name: str) -> None:
    stage = _definition(name)
    module = stage["cmd"].split()[2]  # python -m stages.X [MODEL]
    want = [str(p) for p in code_files(module)]
    assert _code_deps(stage) == want, f"dvc.yaml deps of {name} are stale: run `python -m whaleid.pipeline.codedeps`"


def test_resume_fingerprint_hashes_the_train_stage_code_deps() -> None:
    assert [str(p.relative_to(ROOT)) for p in training_code()] == _code_deps(STAGES["train"])
    assert {
        "whaleid/model/train.py",
        "whaleid/pipeline/members.py",
        "whaleid/model/augment.py",
        "whaleid/model/network.py",
    } <= set(_code_deps(STAGES["train"]))
    assert "whaleid/rule/submission.py" not in _code_deps(STAGES["train"])  # editing the rule never retrains


def test_closure_follows_function_level_imports(tmp_path: Path) -> None:
    (tmp_path / "whaleid").mkdir()
    (tmp_path / "stages").mkdir()
    (tmp_path / "whaleid/a.py").write_text("def f():\n    from whaleid.b import g\n    return g\n")
    (tmp_path / "whaleid/b.py").write_text("import os\nfrom whaleid import c\n")
    (tmp_path / "whaleid/c.py").write_text("X = 1\n")
    (tmp_path / "whaleid/d.py").write_text("X = 2\n")  # imported by nobody
    (tmp_path / "whaleid/__init__.py").write_text("")
    (tmp_path / "stages/s.py").write_text("import whaleid.a\n")
    got = [str(p) for p in code_files("stages.s", tmp_path)]
    assert got == ["stages/s.py", "whaleid/a.py", "whaleid/b.py", "whaleid/c.py"]


def test_member_stages_share_the_main_stages_params_and_deps() -> None:
    # Identical params, data and code deps (the model name aside) let DVC's run cache restore a model that one
    # stage trained when another asks for the same one: a fold model is never trained twice.
    for main, member in (("train", "member"), ("embed", "member_embed")):
        a, b = STAGES[main], STAGES[member]["do"]
        assert a["params"] == b["params"]
        assert [d.replace("fold${fold}", "${item}") for d in a["deps"]] == b["deps"]
        assert a["cmd"].replace("fold${fold}", "${item}") == b["cmd"]


def test_stage_scripts_are_thin() -> None:
    for path in sorted((ROOT / "stages").glob("*.py")):
        lines = len(path.read_text().splitlines())
        assert lines <= 60, f"{path.name} has {lines} lines; stage logic belongs in the library"
        assert "from stages" not in path.read_text(), f"{path.name} imports another stage"


def test_sync_rewrites_only_stale_code_deps(tmp_path: Path) -> None:
    from whaleid.pipeline.codedeps import sync_dvc_yaml

    (tmp_path / "whaleid").mkdir()
    (tmp_path / "stages").mkdir()
    (tmp_path / "whaleid/a.py").write_text("X = 1\n")
    (tmp_path / "whaleid/b.py").write_text("from whaleid import a\n")
    (tmp_path / "stages/one.py").write_text("from whaleid.b import a\n")
    (tmp_path / "stages/two.py").write_text("from whaleid import a\n")
    text = (
        "stages:\n  one:\n    cmd: python -m stages.one\n    deps:\n      - data/in\n      - stages/one.py\n"
        "    outs:\n      - out1\n  two:\n    cmd: python -m stages.two\n    deps:\n      - stages/two.py\n"
        "      - whaleid/a.py\n    outs:\n      - out2\n"
    )
    (tmp_path / "dvc.yaml").write_text(text)
    assert sync_dvc_yaml(tmp_path / "dvc.yaml") == ["one"]
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]
    assert stages["one"]["deps"] == ["data/in", "stages/one.py", "whaleid/a.py", "whaleid/b.py"]
    assert stages["two"]["deps"] == ["stages/two.py", "whaleid/a.py"] and stages["one"]["outs"] == ["out1"]
    assert sync_dvc_yaml(tmp_path / "dvc.yaml") == []  # up to date: nothing rewritten
