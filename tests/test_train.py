"""Training: LR schedule, deterministic sampler, resume fingerprint, resume equality, stale/unsafe checkpoints,
NaN detection, margin warm-up and the species head."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from whaleid.config import AugmentConfig, Params, params_from_dict
from whaleid.core.errors import TrainingDiverged
from whaleid.model.network import WhaleNet
from whaleid.model.schedule import clip_gradients, frozen_modules, lr_lambda
from whaleid.model.train import EpochSampler, train_model
from whaleid.pipeline.members import fingerprint


def test_lr_schedule_warmup_then_cosine() -> None:
    total, warmup = 100, 10
    values = [lr_lambda(s, total, warmup, 0.01) for s in range(total)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False))
    assert lr_lambda(total, total, warmup, 0.01) == pytest.approx(0.01)


@pytest.mark.parametrize("max_norm", [1e-3, 0.5, 1e6])  # clipped hard, clipped a little, not clipped
def test_clip_gradients_is_torchs_clip_bit_for_bit(max_norm: float) -> None:
    g = torch.Generator().manual_seed(0)
    shapes = [(64, 3, 3, 3), (64,), (512, 200), (1,), (7, 5)]
    ours = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    ref = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    for a, b in zip(ours, ref, strict=True):
        a.grad = torch.randn(a.shape, generator=g) * 0.1
        b.grad = a.grad.clone()
    before = [p.grad.double().clone() for p in ours]
    ours.append(torch.nn.Parameter(torch.ones(3)))  # no gradient: left alone, as torch does
    torch.nn.utils.clip_grad_norm_(ref, max_norm, foreach=True)
    clip_gradients(ours, max_norm)
    for a, b in zip(ours, ref, strict=False):
        assert torch.equal(a.grad, b.grad)
    assert ours[-1].grad is None
    norm = float(torch.sqrt(sum((t**2).sum() for t in before)))  # by hand, in float64
    scale = min(max_norm / (norm + 1e-6), 1.0)
    for a, t in zip(ours, before, strict=False):
        assert torch.allclose(a.grad.double(), t * scale, rtol=1e-5, atol=0)
    clip_gradients([torch.nn.Parameter(torch.ones(2))], 1.0)  # nothing has a gradient: no error


def test_sampler_depends_only_on_seed_and_epoch() -> None:
    s = EpochSampler(50, seed=3)
    s.set_epoch(2)
    a = list(s)
    s.set_epoch(0)
    b = list(s)
    s.set_epoch(2)
    assert list(s) == a and a != b
    assert sorted(i for i, _ in a) == list(range(50))


def test_fingerprint_tracks_params_data_and_code_not_mtimes(tmp_path: Path) -> None:
    meta = tmp_path / "info.json"
    meta.write_text('{"digest": "aa"}\n')
    names = ["a.jpg", "b.jpg"]
    base = fingerprint(Params(), [meta], names)
    assert fingerprint(Params(), [meta], names) == base
    assert fingerprint(params_from_dict({"train": {"lr": 0.01}}), [meta], names) != base
    assert fingerprint(params_from_dict({"crop": {"margin": 0.2}}), [meta], names) != base
    assert fingerprint(params_from_dict({"runtime": {"num_workers": 0}}), [meta], names) == base  # runtime only
    assert fingerprint(Params(), [meta], names[:1]) != base  # other training images
    st = meta.stat()
    os.utime(meta, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a checkout: same bytes, new mtime
    assert fingerprint(Params(), [meta], names) == base
    meta.write_text('{"digest": "bb"}\n')  # resized images, folds, labels or training code edited
    assert fingerprint(Params(), [meta], names) != base


# --- the training loop itself, in-process on the tiny dataset ------------------------------------------------


def _setup(tiny_dataset: Path, **train: object):
    from whaleid.config import ArcFaceConfig, ModelConfig, TrainConfig
    from whaleid.data.layout import load_dataset

    ds = load_dataset(tiny_dataset)
    labels = ds.train["individual_id"].astype("category").cat.codes.to_numpy().astype(np.int64)
    species = ds.train["species"].astype("category").cat.codes.to_numpy().astype(np.int64)
    mc = ModelConfig(img_size=32, embedding_dim=16)
    cfg = TrainConfig(**{"epochs": 3, "batch_size": 32, **train})
    n_classes = int(labels.max()) + 1

    def make(arc: ArcFaceConfig | None = None):
        torch.manual_seed(0)
        return WhaleNet(mc, arc or ArcFaceConfig(), n_classes, int(species.max()) + 1)

    return ds.train_paths(), labels, species, cfg, make


def _train(
    make_net, paths, labels, cfg, checkpoint=None, fp="fp", on_epoch=None, aug=None, workers=0, device="cpu", **kw
):
    net = make_net(kw.pop("arc", None))
    history = train_model(
        net,
        paths,
        labels,
        cfg=cfg,
        aug=aug or AugmentConfig(),
        img_size=32,
        device=torch.device(device),
        num_workers=workers,
        checkpoint=checkpoint,
        fingerprint=fp,
        on_epoch=on_epoch,
        progress=False,
        **kw,
    )
    return net, history


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("backend", ["torch", "opencv", "albumentations"])
def test_interrupted_training_resumes_to_identical_weights(tiny_dataset: Path, tmp_path: Path, backend: str) -> None:
    paths, labels, _, cfg, make = _setup(tiny_dataset)
    aug = AugmentConfig(backend=backend)
    ref, ref_hist = _train(make, paths, labels, cfg, aug=aug)

    def stop_after_first(row: dict[str, float]) -> None:
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    ckpt = tmp_path / "last.pt"
    with pytest.raises(KeyboardInterrupt):
        _train(make, paths, labels, cfg, ckpt, on_epoch=stop_after_first, aug=aug)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    resumed, hist = _train(make, paths, labels, cfg, ckpt, aug=aug)
    assert hist == ref_hist and _same_weights(resumed, ref)


def test_kept_decoded_images_train_the_same_bits_and_are_not_read_again(
    tiny_dataset: Path, tmp_path: Path, monkeypatch
) -> None:
    import shutil

    from whaleid.data import images
    from whaleid.data.images import ImageDataset
    from whaleid.model import train as train_module
    from whaleid.model.transforms import AsUint8

    paths, labels, _, cfg, make = _setup(tiny_dataset, epochs=2)
    reads: list[str] = []
    read = images.read_image
    monkeypatch.setattr(images, "read_image", lambda p, *a: reads.append(Path(p).name) or read(p, *a))
    kept, hist_kept = _train(make, paths, labels, cfg)  # 0 workers, small: kept
    assert len(reads) == len(set(reads)) > 0  # no photo read twice
    monkeypatch.setattr(train_module, "KEEP_BYTES", 0)
    reads.clear()
    decoded, hist = _train(make, paths, labels, cfg)  # every epoch reads and decodes again
    assert len(reads) > len(set(reads))
    assert hist == hist_kept and _same_weights(kept, decoded)
    # A kept item comes from memory: its file may be gone; without keep it is read again (and fails).
    copies = [shutil.copy(p, tmp_path / p.name) for p in paths[:2]]
    for keep in (True, False):
        ds = ImageDataset(copies, AsUint8(32), keep=keep)
        first = ds[0][0].clone()
        (tmp_path / paths[0].name).unlink()
        if keep:
            assert torch.equal(ds[0][0], first)
            shutil.copy(paths[0], tmp_path / paths[0].name)
        else:
            with pytest.raises(Exception, match=paths[0].name):
                ds[0]


def test_worker_count_does_not_change_the_result(tiny_dataset: Path) -> None:
    paths, labels, _, cfg, make = _setup(tiny_dataset, epochs=1)
    a, hist_a = _train(make, paths, labels, cfg, workers=0)
    b, hist_b = _train(make, paths, labels, cfg, workers=2)
    assert hist_a == hist_b and _same_weights(a, b)
    c, _ = _train(make, paths, labels, cfg, aug=AugmentConfig(backend="albumentations"))
    assert not _same_weights(a, c)  # the backend does change the augmentation


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_with_amp_learns(tiny_dataset: Path) -> None:
    from whaleid.model.embed import extract_embeddings

    paths, labels, _, cfg, make = _setup(tiny_dataset, epochs=4)
    net, hist = _train(make, paths, labels, cfg, device="cuda")
    assert all(np.isfinite(r["loss"]) for r in hist) and hist[-1]["loss"] < hist[0]["loss"]
    assert next(net.parameters()).device.type == "cuda"
    gpu = extract_embeddings(net, paths[:40], 32, batch_size=16, device=torch.device("cuda"), progress=False)
    cpu = extract_embeddings(
        net.cpu().float(), paths[:40], 32, batch_size=16, device=torch.device("cpu"), progress=False
    )
    assert np.abs((gpu * cpu).sum(1) - 1).max() < 0.02  # bf16/fp16 autocast against fp32: cosine ~ 1


def test_stale_or_unsafe_checkpoint_is_not_resumed(tiny_dataset: Path, tmp_path: Path, caplog) -> None:
    import pickle

    paths, labels, _, cfg, make = _setup(tiny_dataset, epochs=1)
    ckpt = tmp_path / "last.pt"
    _train(make, paths, labels, cfg, ckpt, fp="old-params")
    with caplog.at_level("INFO"):
        _, hist = _train(make, paths, labels, cfg, ckpt, fp="new-params")
    assert "other params or data; discarding" in caplog.text and len(hist) == 1

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    ckpt.write_bytes(pickle.dumps({"fingerprint": "fp", "epoch": Evil()}))
    with caplog.at_level("WARNING"):
        _, hist = _train(make, paths, labels, cfg, ckpt, fp="fp")
    assert "Ignoring unreadable checkpoint" in caplog.text and len(hist) == 1
    assert not (tmp_path / "pwned").exists()


def test_nan_loss_names_epoch_and_step(tiny_dataset: Path) -> None:
    paths, labels, _, cfg, make = _setup(tiny_dataset, epochs=2)
    net = make()
    calls = {"n": 0}
    original = net.head.forward

    def poisoned(emb, ids):
        calls["n"] += 1
        out = original(emb, ids)
        return out * float("nan") if calls["n"] == 3 else out

    net.head.forward = poisoned
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 3\..*lower train.lr.*fp32"):
        train_model(
            net, paths, labels, cfg=cfg, aug=AugmentConfig(), img_size=32, device=torch.device("cpu"), progress=False
        )


def test_margin_warmup_and_species_head_train(tiny_dataset: Path) -> None:
    from whaleid.config import ArcFaceConfig

    paths, labels, species, cfg, make = _setup(tiny_dataset, epochs=2)
    arc = ArcFaceConfig(margin_warmup_epochs=1.0, species_weight=0.5)
    seen: list[float] = []
    net = make(arc)
    original = net.head.forward

    def spy(emb, ids):
        seen.append(net.head.margin_factor)
        return original(emb, ids)

    net.head.forward = spy
    before = net.species_head.weight.detach().clone()
    train_model(
        net,
        paths,
        labels,
        cfg=cfg,
        aug=AugmentConfig(),
        img_size=32,
        device=torch.device("cpu"),
        progress=False,
        species=species,
        arc=arc,
    )
    steps = len(seen) // 2
    np.testing.assert_allclose(seen[:steps], [(i + 1) / steps for i in range(steps)])  # linear over epoch 1
    assert seen[steps:] == [1.0] * (len(seen) - steps) and net.head.margin_factor == 1.0
    assert not torch.equal(before, net.species_head.weight)  # the auxiliary loss reached the species head


def test_freeze_keeps_the_backbones_leading_layers_as_they_start(tiny_dataset: Path) -> None:
    paths, labels, _, cfg, make = _setup(tiny_dataset, epochs=1, freeze=0.5)
    start = make()
    frozen = frozen_modules(start, 0.5)
    params = list(start.backbone.parameters())
    held = sum(p.numel() for m in frozen for p in m.parameters(recurse=False))
    total = sum(p.numel() for p in params)
    assert 0.5 * total <= held < 0.5 * total + max(p.numel() for p in params)  # the leading layers past half
    name_of = {id(m): n for n, m in start.named_modules()}
    keys = {
        f"{name_of[id(m)]}.{k}"
        for m in frozen
        for k, _ in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]
    }
    before = {k: v.clone() for k, v in start.state_dict().items()}
    net, _ = _train(make, paths, labels, cfg)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in keys)  # weights and BatchNorm statistics as they started
    others = [k for k in after if k not in keys and after[k].is_floating_point()]
    assert any(not torch.equal(before[k], after[k]) for k in others)  # the rest trained
