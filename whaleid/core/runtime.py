"""How work runs, never what it computes: one small value passed where photos are decoded, matched or embedded,
instead of the same four parameters threaded through every signature.

The pipeline makes it from ``runtime.*`` and ``data.max_megapixels`` (:func:`whaleid.config.params.runtime_of`);
``whaleid identify`` from its command line; library users keep the defaults or make their own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

DEFAULT_MAX_MEGAPIXELS = 100.0  # data.max_megapixels; OpenCV itself refuses 2**30 pixels and more


@dataclass(frozen=True)
class Runtime:
    """Attributes:
    n_jobs: worker processes for per-photo work (joblib; -1: one per core).
    progress: show progress bars.
    max_megapixels: photos whose header claims more pixels are refused before decoding (3 bytes a pixel per
        worker when decoded).
    device: where models run: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
    """

    n_jobs: int = -1
    progress: bool = True
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    device: str = "cpu"

    def quiet(self) -> Runtime:
        """The same without progress bars."""
        return replace(self, progress=False)

    def torch_device(self) -> object:
        """The ``torch.device`` of :attr:`device` (checked: ``cuda`` without a GPU is a one-line error)."""
        from whaleid.core.device import select_device

        return select_device(self.device)
