"""BatchNorm folding for inference (whaleid.model.fold): the folded network must embed as the network does, leave
it unchanged, and refuse what cannot be folded exactly."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from whaleid.config import ArcFaceConfig, ModelConfig
from whaleid.model.embed import extract_embeddings
from whaleid.model.fold import fold_batchnorm, inference_model
from whaleid.model.network import WhaleNet


def _net(backbone: str, seed: int = 0) -> WhaleNet:
    """An eval-mode network whose BatchNorms hold statistics and affine weights far from the identity (freshly
    built ones are the identity, which any folding, right or wrong, would reproduce)."""
    torch.manual_seed(seed)
    net = WhaleNet(ModelConfig(backbone=backbone, embedding_dim=16), ArcFaceConfig(), 5).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                for t, lo, hi in (
                    (m.running_mean, -1, 1),
                    (m.running_var, 0.3, 3),
                    (m.weight, 0.5, 2),
                    (m.bias, -1, 1),
                ):
                    t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)
    return net.to(memory_format=torch.channels_last)


def _batchnorms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


@pytest.mark.parametrize("backbone", ["test_resnet", "test_efficientnet", "tf_efficientnet_b0"])
def test_folded_network_embeds_as_the_network(backbone: str) -> None:
    """Plain BatchNorm2d (resnet), timm's BatchNormAct2d (efficientnet) and "same"-padded convolutions (the tf_
    ports, the competition recipe's): every BatchNorm is gone, the embeddings agree to float rounding."""
    net = _net(backbone)
    before = copy.deepcopy(net.state_dict())
    folded = fold_batchnorm(net)
    assert folded is not net and _batchnorms(net) > 0 and _batchnorms(folded.backbone) == 0
    # the folded weights keep the network's channels_last layout (extract_embeddings runs the copy as it comes)
    convs = [m for m in folded.backbone.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    x = torch.randn(6, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want, got = net.embed(x), folded.embed(x)
    scale = want.abs().max().item()
    assert scale > 0.1  # a real signal, not a collapsed one
    # float rounding grows with depth (49 folded layers in the tf_ port): agreement relative to the signal's size
    torch.testing.assert_close(got, want, atol=1e-4 * scale, rtol=0)
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # the network itself is untouched


class _StandardisedConv(nn.Conv2d):
    """A convolution that standardises its weights first (as weight-standardised ResNets do): a BatchNorm's scale
    folded into its weights would be standardised away."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return nn.functional.conv2d(x, w, self.bias, self.stride, self.padding)


class _Backbone(nn.Module):
    def __init__(self, conv: nn.Conv2d, branch: bool = False) -> None:
        super().__init__()
        self.conv, self.bn, self.branch = conv, nn.BatchNorm2d(conv.out_channels), branch

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch and bool(x.mean() > 0):  # control flow on values: torch.fx cannot trace it
            x = x * 2
        return self.bn(self.conv(x))


@pytest.mark.parametrize(
    "backbone",
    [_Backbone(_StandardisedConv(3, 4, 3)), _Backbone(nn.Conv2d(3, 4, 3), branch=True)],
    ids=["standardised-conv", "untraceable"],
)
def test_what_cannot_be_folded_exactly_runs_as_it_is(backbone: nn.Module) -> None:
    net = _net("test_resnet")
    net.backbone = backbone
    with torch.no_grad():
        backbone.bn.running_var.fill_(4.0)
        backbone.bn.weight.fill_(3.0)
    net.eval()
    assert fold_batchnorm(net) is net


def test_inference_model_folds_once_and_again_after_a_weight_change() -> None:
    net = _net("test_resnet")
    assert inference_model(net, build=False) is net  # only looked up: nothing kept yet
    first = inference_model(net)
    assert inference_model(net) is first and inference_model(net, build=False) is first  # folded once
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d)).weight.mul_(3.0)  # an optimiser's step
    again = inference_model(net)
    assert again is not first
    with torch.inference_mode():
        torch.testing.assert_close(again.embed(x), net.embed(x), atol=2e-5, rtol=1e-4)
        assert (first.embed(x) - net.embed(x)).abs().max() > 1e-3  # the stale fold would have been wrong


def test_extract_embeddings_runs_the_folded_network(tiny_dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embed stage's function runs the folded copy (the convolutions' forward is counted) and gives the
    network's own L2-normalised embeddings."""
    from whaleid.data.images import ImageDataset
    from whaleid.model.augment import model_input
    from whaleid.model.transforms import AsUint8

    net = _net("test_resnet")
    paths = sorted((tiny_dataset / "train_images").iterdir())[:5]
    x = model_input(ImageDataset(paths, AsUint8(32)).batch(range(len(paths)))[0], torch.device("cpu"))
    with torch.inference_mode():
        want = nn.functional.normalize(net.embed(x), dim=1).numpy()
    monkeypatch.setattr("whaleid.model.embed.FOLD_MIN_IMAGES", 3)  # a few photos here: folded all the same
    bn_calls = []
    forward = nn.BatchNorm2d.forward
    monkeypatch.setattr(nn.BatchNorm2d, "forward", lambda self, x: bn_calls.append(1) or forward(self, x))
    got = extract_embeddings(net, paths, 32, batch_size=2, device=torch.device("cpu"), progress=False)
    assert not bn_calls  # no BatchNorm ran
    np.testing.assert_allclose(got, want, atol=1e-5)
