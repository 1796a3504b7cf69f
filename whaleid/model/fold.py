"""Inference copies of a network with each BatchNorm folded into the convolution that feeds it.

In eval mode a BatchNorm is a fixed per-channel scale and shift, so ``bn(conv(x))`` is one convolution with
scaled weights and a bias: the same embeddings (to float rounding) without a pass over every activation map.
For the default ``test_resnet`` at 96 px on 2 CPU cores that is about a quarter of the backbone's time
(``python -m bench.embed``). The backbone's ``forward_features`` is traced with ``torch.fx`` and only the exact
pattern (a plain or timm "same"-padded ``Conv2d`` whose one user is a ``BatchNorm2d`` or timm ``BatchNormAct2d``
with running statistics) is folded; a convolution that transforms its weights (weight standardisation), a norm
layer of another kind or a backbone ``torch.fx`` cannot trace is left as it is. The network given is never changed.
"""

from __future__ import annotations

import collections
import copy
import itertools
import logging
import weakref

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger(__name__)


def _kinds() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(convolutions whose forward is F.conv2d of their own weight and bias, BatchNorms that may be folded)."""
    convs: tuple[type, ...] = (nn.Conv2d,)
    norms: tuple[type, ...] = (nn.BatchNorm2d,)
    try:
        from timm.layers import BatchNormAct2d, Conv2dSame

        convs, norms = (*convs, Conv2dSame), (*norms, BatchNormAct2d)
    except ImportError:  # an older timm: plain layers only
        pass
    return convs, norms


class _Tracer(fx.Tracer):
    """Keeps every convolution and BatchNorm a single node, so that their modules can be matched by type."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, (nn.Conv2d, nn.BatchNorm2d)) or super().is_leaf_module(module, qualified_name)


class _Features(nn.Module):
    """``backbone.forward_features`` as a module's ``forward``, what is traced."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)


class FoldedBackbone(nn.Module):
    """Stands in for a timm backbone at inference: ``forward_features`` runs the folded graph."""

    def __init__(self, graph: fx.GraphModule) -> None:
        super().__init__()
        self.graph = graph

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)


def _replace(graph: fx.GraphModule, target: str, module: nn.Module) -> None:
    """Put ``module`` where the submodule named ``target`` (dotted) is."""
    parent, _, name = target.rpartition(".")
    setattr(graph.get_submodule(parent), name, module)


def fold_graph(graph: fx.GraphModule) -> int:
    """Fold, in place, every exact convolution -> BatchNorm pair of ``graph`` (modules in eval mode); return how
    many were folded."""
    convs, norms = _kinds()
    modules = dict(graph.named_modules())
    calls = collections.Counter(n.target for n in graph.graph.nodes if n.op == "call_module")
    folded = 0
    for node in list(graph.graph.nodes):
        if node.op != "call_module" or type(modules[node.target]) not in norms or len(node.args) != 1:
            continue
        bn, conv_node = modules[node.target], node.args[0]
        if not isinstance(conv_node, fx.Node) or conv_node.op != "call_module" or len(conv_node.users) != 1:
            continue
        conv = modules[conv_node.target]
        if type(conv) not in convs or bn.running_mean is None or bn.training or conv.training:
            continue
        if calls[node.target] > 1 or calls[conv_node.target] > 1:  # a module called at two places of the graph
            continue
        _replace(graph, conv_node.target, fuse_conv_bn_eval(conv, bn))
        if type(bn) is nn.BatchNorm2d:
            node.replace_all_uses_with(conv_node)
            graph.graph.erase_node(node)
        else:  # timm's BatchNormAct2d: the norm, then its dropout and activation, which stay
            _replace(graph, node.target, nn.Sequential(bn.drop, bn.act))
        folded += 1
    graph.graph.lint()
    graph.recompile()
    graph.delete_all_unused_submodules()
    return folded


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` (a :class:`whaleid.model.network.WhaleNet`) whose backbone has its
    BatchNorms folded; ``model`` itself when none could be (nothing to fold, or a backbone fx cannot trace)."""
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "forward_features"):
        return model
    features = copy.deepcopy(_Features(backbone)).eval()
    try:
        graph = fx.GraphModule(features, _Tracer().trace(features))
    except Exception as exc:  # noqa: BLE001 - any backbone fx cannot trace (control flow on values, ...) runs as it is
        log.debug("BatchNorm not folded: %s cannot be traced (%s)", type(backbone).__name__, exc)
        return model
    if fold_graph(graph) == 0:
        return model
    out = copy.copy(model)  # the network's other modules are shared, its backbone replaced in the copy only
    out._modules = dict(model._modules)
    out._modules["backbone"] = FoldedBackbone(graph)
    return out.eval()


_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]] = weakref.WeakKeyDictionary()


def inference_model(model: nn.Module, build: bool = True) -> nn.Module:
    """:func:`fold_batchnorm` of ``model``, kept while its weights stay as they are: repeated calls fold once, and
    a step of training (weights changed in place, or replaced) folds again. With ``build`` False a fold is only
    looked up: ``model`` itself when none is kept (tracing costs more than it saves on a few photos). ``model``
    must be in eval mode."""
    state = tuple((t.data_ptr(), t._version) for t in itertools.chain(model.parameters(), model.buffers()))
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == state:
        return hit[1]
    if not build:
        return model
    with torch.inference_mode(False), torch.no_grad():
        folded = fold_batchnorm(model)
    _CACHE[model] = (state, folded)
    return folded
