"""Checkpoints as ready PyTorch modules: :func:`load` builds the ``torch.nn.Module`` of the
checkpoint's architecture and loads its weights, so that its logits are those of the burn
network the sidecars trained (``client/src/models``).

The mapping (see :mod:`fedra.model` for the layout):

* dense layers: fedra stores ``[in, out]``; ``nn.Linear.weight`` is ``[out, in]``, so each
  dense weight is transposed on load;
* conv layers: ``[out, in, k, k]`` is ``nn.Conv2d.weight`` as is; stride 1, zero padding
  ``k // 2``, then ReLU and ``nn.MaxPool2d(2, 2)`` (floor), as burn's layers do;
* inputs are rows of ``input_dim`` values (a CNN row is C·H·W values in C, H, W order), or,
  for a CNN, ``[batch, C, H, W]`` tensors; outputs are logits ``[batch, classes]``.

Needs PyTorch (``pip install torch``); importing this module without it raises an
``ImportError`` saying so.
"""

from __future__ import annotations

import os

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "fedra.torch needs PyTorch: pip install torch (or pip install 'fedra[torch]'); "
        "without it, Checkpoint.tensors holds the weights as numpy arrays"
    ) from e

from fedra.checkpoint import Checkpoint, TrustedKeys, open_checkpoint
from fedra.model import Architecture, Cnn, LogisticRegression, Mlp, input_dim


class FedraLogisticRegression(nn.Module):
    """logits = x·W + b (one ``linear`` layer)."""

    def __init__(self, a: LogisticRegression) -> None:
        super().__init__()
        self.linear = nn.Linear(a.input_dim, a.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x)
        return out


class FedraMlp(nn.Module):
    """``hidden`` dense layers with ReLU, then ``output``."""

    def __init__(self, a: Mlp) -> None:
        super().__init__()
        widths = (a.input_dim, *a.hidden)
        self.hidden = nn.ModuleList(nn.Linear(i, o) for i, o in zip(widths, widths[1:]))
        self.output = nn.Linear(widths[-1], a.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = torch.relu(layer(x))
        out: torch.Tensor = self.output(x)
        return out


class FedraCnn(nn.Module):
    """``conv`` layers (conv, ReLU, 2×2 max-pool), flatten (C, H, W), ``dense`` with ReLU,
    then ``output``."""

    def __init__(self, a: Cnn) -> None:
        super().__init__()
        self.input_shape = (a.channels, a.height, a.width)
        channels = [a.channels] + [c.filters for c in a.conv]
        self.conv = nn.ModuleList(
            nn.Conv2d(c_in, c.filters, c.kernel, stride=1, padding=c.kernel // 2)
            for c_in, c in zip(channels, a.conv)
        )
        self.pool = nn.MaxPool2d(2, stride=2)
        h, w = a.conv_output_hw()
        widths = (channels[-1] * h * w, *a.dense)
        self.dense = nn.ModuleList(nn.Linear(i, o) for i, o in zip(widths, widths[1:]))
        self.output = nn.Linear(widths[-1], a.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.reshape(x.shape[0], *self.input_shape)
        for conv in self.conv:
            x = self.pool(torch.relu(conv(x)))
        x = x.flatten(1)
        for layer in self.dense:
            x = torch.relu(layer(x))
        out: torch.Tensor = self.output(x)
        return out


def module_for(architecture: Architecture) -> nn.Module:
    """A freshly initialised module of ``architecture`` (its parameter names are fedra's
    tensor names)."""
    if isinstance(architecture, LogisticRegression):
        return FedraLogisticRegression(architecture)
    if isinstance(architecture, Mlp):
        return FedraMlp(architecture)
    return FedraCnn(architecture)


def state_dict(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors as a PyTorch state dict: same names, dense weights
    transposed to ``[out, in]``."""
    out = {}
    for name, array in checkpoint.tensors.items():
        t = torch.from_numpy(array.copy())
        if name.endswith(".weight") and t.dim() == 2:
            t = t.t().contiguous()
        out[name] = t
    return out


def load(
    checkpoint: Checkpoint | str | os.PathLike[str],
    trust: str | os.PathLike[str] | TrustedKeys | None = None,
    verify_signature: bool = True,
) -> nn.Module:
    """A ready ``torch.nn.Module`` (float32, CPU, in eval mode) of the checkpoint's
    architecture with its weights. Its ``fedra_checkpoint`` attribute is the checkpoint id
    and ``input_dim`` the width of an input row.

    ``checkpoint`` is a :class:`~fedra.checkpoint.Checkpoint` (from :meth:`Client.pull`) or a
    directory written by ``fedra checkpoint pull`` or :meth:`Checkpoint.save`, which is
    verified first (``trust``: the trusted keys file; see :func:`fedra.open_checkpoint`).

    Raises:
        UntrustedCheckpointError: a directory that fails verification.
    """
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = open_checkpoint(checkpoint, trust=trust, verify_signature=verify_signature)
    module = module_for(checkpoint.architecture)
    # strict: every parameter of the module comes from the checkpoint and vice versa.
    module.load_state_dict(state_dict(checkpoint), strict=True)
    module.eval()
    module.fedra_checkpoint = checkpoint.id  # type: ignore[assignment]
    module.input_dim = input_dim(checkpoint.architecture)  # type: ignore[assignment]
    return module
