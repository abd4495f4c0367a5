"""Model architectures and their tensor layouts, as ``types/src/model.rs`` defines them.

A checkpoint is a flat list of named float32 tensors; what they mean is fixed by the
architecture (read from the checkpoint's manifest):

============================  ==================================================================
logistic regression           ``linear.weight`` [input_dim, classes], ``linear.bias`` [classes]
MLP                           ``hidden.{i}.weight`` [d_i, d_i+1], ``hidden.{i}.bias``, then
                              ``output.weight`` [d_last, classes], ``output.bias``
CNN                           ``conv.{i}.weight`` [filters, in_channels, k, k], ``conv.{i}.bias``,
                              then ``dense.{j}.*`` and ``output.*`` as for the MLP
============================  ==================================================================

Dense weights are ``[in, out]`` (logits = x·W + b), the transpose of ``torch.nn.Linear``'s;
conv weights are ``[out, in, k, k]``, exactly ``torch.nn.Conv2d``'s. A conv layer is conv
(stride 1, zero padding k // 2) → ReLU → 2×2 max-pool (stride 2, floor), flattened in C, H, W
order before the dense layers; hidden dense layers use ReLU; the last layer gives logits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedra.errors import UntrustedCheckpointError


@dataclass(frozen=True)
class ConvLayer:
    """One conv layer of a :class:`Cnn`: ``filters`` output channels, an odd ``kernel``."""

    filters: int
    kernel: int


@dataclass(frozen=True)
class LogisticRegression:
    """logits = x · W + b."""

    input_dim: int
    classes: int


@dataclass(frozen=True)
class Mlp:
    """Dense layers of widths ``hidden`` with ReLU between them, then ``classes`` logits."""

    input_dim: int
    hidden: tuple[int, ...]
    classes: int


@dataclass(frozen=True)
class Cnn:
    """Conv(+ReLU+2x2 max-pool) layers, then dense layers, on ``channels × height × width``
    inputs given as flat rows in C, H, W order."""

    height: int
    width: int
    channels: int
    conv: tuple[ConvLayer, ...]
    dense: tuple[int, ...]
    classes: int

    def conv_output_hw(self) -> tuple[int, int]:
        """Height and width after every conv layer's 2×2 pool."""
        return self.height >> len(self.conv), self.width >> len(self.conv)


Architecture = LogisticRegression | Mlp | Cnn


def input_dim(a: Architecture) -> int:
    """Values in one input row."""
    if isinstance(a, Cnn):
        return a.channels * a.height * a.width
    return a.input_dim


def layout(a: Architecture) -> list[tuple[str, tuple[int, ...]]]:
    """The architecture's tensors (name, shape) in the order of the flat parameter vector."""
    out: list[tuple[str, tuple[int, ...]]] = []

    def dense(prefix: str, width: int, widths: tuple[int, ...], classes: int) -> None:
        for i, h in enumerate(widths):
            out.append((f"{prefix}.{i}.weight", (width, h)))
            out.append((f"{prefix}.{i}.bias", (h,)))
            width = h
        out.append(("output.weight", (width, classes)))
        out.append(("output.bias", (classes,)))

    if isinstance(a, LogisticRegression):
        out += [("linear.weight", (a.input_dim, a.classes)), ("linear.bias", (a.classes,))]
    elif isinstance(a, Mlp):
        dense("hidden", a.input_dim, a.hidden, a.classes)
    else:
        c_in = a.channels
        for i, c in enumerate(a.conv):
            out.append((f"conv.{i}.weight", (c.filters, c_in, c.kernel, c.kernel)))
            out.append((f"conv.{i}.bias", (c.filters,)))
            c_in = c.filters
        h, w = a.conv_output_hw()
        dense("dense", c_in * h * w, a.dense, a.classes)
    return out


def architecture_from_json(value: Mapping[str, Any], origin: str) -> Architecture:
    """Reads the serde form stored in manifests and run plans
    (``{"kind": "mlp", "input_dim": …}``).

    Raises:
        UntrustedCheckpointError: the form is not one fedra writes (``origin`` names where).
    """
    try:
        kind = value["kind"]
        if kind == "logistic_regression":
            return LogisticRegression(int(value["input_dim"]), int(value["classes"]))
        if kind == "mlp":
            return Mlp(int(value["input_dim"]), tuple(int(h) for h in value["hidden"]), int(value["classes"]))
        if kind == "cnn":
            return Cnn(
                int(value["height"]),
                int(value["width"]),
                int(value["channels"]),
                tuple(ConvLayer(int(c["filters"]), int(c["kernel"])) for c in value["conv"]),
                tuple(int(d) for d in value["dense"]),
                int(value["classes"]),
            )
    except (KeyError, TypeError, ValueError) as e:
        raise UntrustedCheckpointError(f"{origin}: malformed model architecture: {e!r}") from None
    raise UntrustedCheckpointError(f"{origin}: unknown model architecture kind {value.get('kind')!r}")
