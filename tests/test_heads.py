"""ArcFace logits and GeM pooling against direct formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from whaleid.model.heads import ArcFace, dynamic_margins
from whaleid.model.network import GeM


def direct_arcface(emb, weight, labels, s, m, easy):
    """Per-element reference: angle = acos(cos); target logit = s*cos(angle + m) (with the fallbacks)."""
    out = np.zeros((len(emb), len(weight)))
    for i, e in enumerate(emb):
        for j, w in enumerate(weight):
            c = float(np.dot(e, w) / (np.linalg.norm(e) * np.linalg.norm(w)))
            if j == labels[i]:
                theta = math.acos(max(-1.0, min(1.0, c)))
                if easy:
                    c = math.cos(theta + m) if c > 0 else c
                else:
                    c = math.cos(theta + m) if c > math.cos(math.pi - m) else c - math.sin(math.pi - m) * m
            out[i, j] = s * c
    return out


@pytest.mark.parametrize("easy", [False, True])
def test_arcface_matches_direct_formula(easy: bool) -> None:
    torch.manual_seed(0)
    head = ArcFace(8, 6, scale=20.0, margin=0.4, easy_margin=easy)
    emb = torch.randn(12, 8)
    emb[0] = -head.weight[3].detach()  # a target at angle pi: exercises the theta + m > pi branch
    labels = torch.tensor([3, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4])
    got = head(emb, labels).detach().numpy()
    want = direct_arcface(emb.numpy(), head.weight.detach().numpy(), labels.numpy(), 20.0, 0.4, easy)
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_arcface_is_finite_in_half_precision_edge_cases() -> None:
    head = ArcFace(4, 3, scale=30.0, margin=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3, 4))
    emb = torch.eye(3, 4).half()  # cos exactly 1 on the target: sqrt(1 - cos^2) at 0
    logits = head(emb, torch.tensor([0, 1, 2]))
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2]))
    loss.backward()
    assert torch.isfinite(head.weight.grad).all()


def test_zero_margin_is_scaled_cosine() -> None:
    torch.manual_seed(1)
    head = ArcFace(5, 4, scale=10.0, margin=0.0)
    emb = torch.randn(7, 5)
    logits = head(emb, torch.zeros(7, dtype=torch.long))
    np.testing.assert_allclose(logits.detach().numpy(), 10.0 * head.cosine(emb).detach().numpy(), atol=1e-5)


def test_gem_matches_direct_formula() -> None:
    torch.manual_seed(2)
    x = torch.rand(2, 3, 4, 5) + 0.01
    for p in (1.0, 3.0, 6.5):
        got = GeM(p)(x)
        want = np.zeros((2, 3))
        for b in range(2):
            for c in range(3):
                want[b, c] = np.mean(x[b, c].numpy().astype(np.float64) ** p) ** (1 / p)
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-5)
    # p = 1 is average pooling; a large p approaches max pooling.
    np.testing.assert_allclose(GeM(1.0)(x).detach().numpy(), x.mean((-2, -1)).numpy(), rtol=1e-5)
    assert torch.allclose(GeM(200.0)(x), x.amax((-2, -1)), rtol=0.05)


def test_gem_p_is_learnable() -> None:
    pool = GeM(3.0)
    pool(torch.rand(1, 2, 3, 3) + 0.1).sum().backward()
    assert pool.p.grad is not None and pool.p.grad.abs() > 0
    assert not GeM(3.0, learnable=False).p.requires_grad


def direct_subcenter(emb, weight, labels, s, margins, k):
    """Per-element reference for sub-center ArcFace with per-class margins (non-easy branch)."""
    n_classes = len(weight) // k
    out = np.zeros((len(emb), n_classes))
    for i, e in enumerate(emb):
        for c in range(n_classes):
            cos = max(
                float(np.dot(e, weight[c * k + j]) / (np.linalg.norm(e) * np.linalg.norm(weight[c * k + j])))
                for j in range(k)
            )
            if c == labels[i]:
                m = margins[c]
                theta = math.acos(max(-1.0, min(1.0, cos)))
                cos = math.cos(theta + m) if cos > math.cos(math.pi - m) else cos - math.sin(math.pi - m) * m
            out[i, c] = s * cos
    return out


def test_subcenter_logits_with_per_class_margins_match_direct_formula() -> None:
    torch.manual_seed(3)
    head = ArcFace(6, 4, scale=16.0, margin=0.3, subcenters=3)
    margins = np.array([0.1, 0.2, 0.3, 0.45], dtype=np.float32)
    head.set_margins(margins)
    emb = torch.randn(10, 6)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 1, 2])
    got = head(emb, labels).detach().numpy()
    want = direct_subcenter(emb.numpy(), head.weight.detach().numpy(), labels.numpy(), 16.0, margins, 3)
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_margin_factor_scales_margins() -> None:
    torch.manual_seed(4)
    head = ArcFace(5, 3, scale=10.0, margin=0.4)
    emb, labels = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    head.margin_factor = 0.0
    np.testing.assert_allclose(head(emb, labels).detach().numpy(), 10.0 * head.cosine(emb).detach().numpy(), atol=1e-5)
    head.margin_factor = 0.5
    want = direct_arcface(emb.numpy(), head.weight.detach().numpy(), labels.numpy(), 10.0, 0.2, False)
    np.testing.assert_allclose(head(emb, labels).detach().numpy(), want, atol=2e-4)


def test_dynamic_margins_hand_computed() -> None:
    counts = np.array([1, 16, 81, 0])
    got = dynamic_margins(counts, low=0.1, high=0.5, power=0.25)
    # n ** -0.25: 1, 0.5, 1/3, (0 -> 1) 1. Rarest -> 0.5, most frequent -> 0.1, linear in between.
    want = [0.5, 0.1 + 0.4 * (0.5 - 1 / 3) / (1 - 1 / 3), 0.1, 0.5]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(dynamic_margins(np.array([5, 5]), 0.1, 0.3), [0.3, 0.3])


def test_arcface_is_fp32_and_finite_under_bf16_autocast() -> None:
    head = ArcFace(4, 3, scale=64.0, margin=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3, 4))
    emb = torch.eye(3, 4) * 1e-3  # tiny norms: bf16 rounding pushes |cos| past 1 without the clamp
    emb.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(emb, torch.tensor([0, 1, 2]))
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    assert torch.isfinite(emb.grad).all()
