"""Training helpers: LR schedule, deterministic sampler, resume fingerprint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stages.train import fingerprint
from whaleid.config import Params, params_from_dict
from whaleid.train import EpochSampler, lr_lambda


def test_lr_schedule_warmup_then_cosine() -> None:
    total, warmup = 100, 10
    values = [lr_lambda(s, total, warmup, 0.01) for s in range(total)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False))
    assert lr_lambda(total, total, warmup, 0.01) == pytest.approx(0.01)


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
