"""Run plans: the TOML format of ``fedra run submit plan.toml`` (see
``sim/plans/quickstart.toml`` and the README's plan sections), read from a file or from a
dict of the same shape, into the ``RunPlan`` message the coordinator validates.

The reading is as strict as the CLI's (``cli/src/plan_file.rs``): unknown keys, missing
keys and values of the wrong type are :class:`~fedra.errors.PlanError` naming the key;
defaults are the CLI's, so the same file gives the same ``RunPlan`` from Python and from
``fedra`` (an integration test compares the two byte for byte). Values are not judged here:
the coordinator checks every range at submit time and names the bad field.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias

from fedra.errors import PlanError
from fedra.v1 import fedra_pb2 as pb

PLAN_VERSION = 1

PlanSource: TypeAlias = "str | os.PathLike[str] | Mapping[str, Any] | pb.RunPlan"
"""What :func:`load_plan` accepts: a TOML file path, a dict shaped like the file, or a
``RunPlan`` message as is."""

_U32 = (0, 2**32 - 1)
_U64 = (0, 2**64 - 1)
_I32 = (-(2**31), 2**31 - 1)


class _Table:
    """One TOML table read strictly: every key taken is removed, :meth:`done` refuses the
    rest. ``path`` is the table's dotted name in messages (``local``, ``privacy.adaptive``)."""

    def __init__(self, value: Any, path: str, origin: str) -> None:
        if not isinstance(value, Mapping):
            raise PlanError(f"plan {origin}: {path or 'the plan'} must be a table, got {_kind(value)}")
        self.rest = dict(value)
        self.path = path
        self.origin = origin

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, message: str) -> PlanError:
        return PlanError(f"plan {self.origin}: {message}")

    def has(self, key: str) -> bool:
        return key in self.rest

    def raw(self, key: str, required: bool) -> Any:
        if key in self.rest:
            return self.rest.pop(key)
        if required:
            raise self.fail(f"missing key {self.name(key)}")
        return None

    def integer(self, key: str, bounds: tuple[int, int], default: int | None = None) -> int:
        v = self.raw(key, default is None)
        if v is None:
            return default  # type: ignore[return-value]
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(f"{self.name(key)} must be an integer, got {_kind(v)}")
        lo, hi = bounds
        if not lo <= v <= hi:
            raise self.fail(f"{self.name(key)} must be in {lo}..={hi}, got {v}")
        return v

    def size(self, key: str) -> int:
        """A dimension (usize in Rust): non-negative; the wire's u32 saturates like the CLI's."""
        v = self.integer(key, _U64)
        return min(v, _U32[1])

    def number(self, key: str, default: float | None = None) -> float:
        v = self.raw(key, default is None)
        if v is None:
            return default  # type: ignore[return-value]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(f"{self.name(key)} must be a number, got {_kind(v)}")
        return float(v)

    def optional_number(self, key: str) -> float | None:
        return self.number(key) if key in self.rest else None

    def string(self, key: str, default: str | None = None) -> str:
        v = self.raw(key, default is None)
        if v is None:
            return default  # type: ignore[return-value]
        if not isinstance(v, str):
            raise self.fail(f"{self.name(key)} must be a string, got {_kind(v)}")
        return v

    def boolean(self, key: str, default: bool) -> bool:
        v = self.raw(key, False)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.fail(f"{self.name(key)} must be true or false, got {_kind(v)}")
        return v

    def choice(self, key: str, choices: Mapping[str, Any], default: str | None = None) -> Any:
        v = self.string(key, default)
        if v not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise self.fail(f"{self.name(key)}: unknown value {v!r}, expected one of {allowed}")
        return choices[v]

    def sizes(self, key: str) -> list[int]:
        v = self.raw(key, True)
        if not isinstance(v, list):
            raise self.fail(f"{self.name(key)} must be a list of integers, got {_kind(v)}")
        out = []
        for i, item in enumerate(v):
            if isinstance(item, bool) or not isinstance(item, int) or item < 0:
                raise self.fail(f"{self.name(key)}[{i}] must be a non-negative integer, got {item!r}")
            out.append(min(item, _U32[1]))
        return out

    def table(self, key: str, required: bool = False) -> _Table | None:
        v = self.raw(key, required)
        return None if v is None else _Table(v, self.name(key), self.origin)

    def done(self) -> None:
        if self.rest:
            keys = ", ".join(self.name(k) for k in sorted(self.rest))
            raise self.fail(f"unknown key {keys}")


def _kind(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}.get(
        type(v), "a table" if isinstance(v, Mapping) else type(v).__name__
    )


def _model(t: _Table) -> pb.ModelSpec:
    spec = pb.ModelSpec(name=t.string("name"))
    kind = t.string("kind")
    if kind == "logistic_regression":
        spec.logistic_regression.CopyFrom(pb.LogisticRegression(input_dim=t.size("input_dim"), classes=t.size("classes")))
    elif kind == "mlp":
        spec.mlp.CopyFrom(pb.Mlp(input_dim=t.size("input_dim"), hidden=t.sizes("hidden"), classes=t.size("classes")))
    elif kind == "cnn":
        cnn = pb.Cnn(height=t.size("height"), width=t.size("width"), channels=t.size("channels"))
        layers = t.raw("conv", True)
        if not isinstance(layers, list):
            raise t.fail(f"model.conv must be a list of {{ filters, kernel }} tables, got {_kind(layers)}")
        for i, layer in enumerate(layers):
            lt = _Table(layer, f"model.conv[{i}]", t.origin)
            cnn.conv.append(pb.ConvLayer(filters=lt.size("filters"), kernel=lt.size("kernel")))
            lt.done()
        cnn.dense.extend(t.sizes("dense"))
        cnn.classes = t.size("classes")
        spec.cnn.CopyFrom(cnn)
    else:
        raise t.fail(f"model.kind: unknown architecture {kind!r}, expected logistic_regression, mlp or cnn")
    t.done()
    return spec


def _strategy(top: _Table, plan: pb.RunPlan) -> None:
    if not top.has("strategy"):
        plan.strategy = pb.STRATEGY_FED_AVG
        return
    value = top.rest["strategy"]
    if isinstance(value, str):
        top.rest.pop("strategy")
        if value != "fed_avg":
            raise top.fail(
                f'unknown strategy {value!r}: "fed_avg", or a [strategy] table with kind = '
                "fed_avg_m | fed_adagrad | fed_adam | fed_yogi"
            )
        plan.strategy = pb.STRATEGY_FED_AVG
        return
    t = top.table("strategy")
    assert t is not None
    kinds = {"fed_avg_m": pb.STRATEGY_FED_AVG_M, "fed_adagrad": pb.STRATEGY_FED_ADAGRAD,
             "fed_adam": pb.STRATEGY_FED_ADAM, "fed_yogi": pb.STRATEGY_FED_YOGI}
    kind = t.string("kind")
    if kind not in kinds:
        raise t.fail(f"strategy.kind: unknown server optimizer {kind!r}, expected one of {', '.join(kinds)}")
    plan.strategy = kinds[kind]
    o = pb.ServerOptimizer(server_learning_rate=t.number("server_learning_rate"))
    if kind == "fed_avg_m":
        o.momentum = t.number("momentum")
    else:
        o.beta1 = t.number("beta1", 0.9)
        if kind != "fed_adagrad":
            o.beta2 = t.number("beta2", 0.99)
        o.tau = t.number("tau", 1e-3)
    t.done()
    plan.server_optimizer.CopyFrom(o)


def _aggregator(top: _Table, plan: pb.RunPlan) -> None:
    if not top.has("aggregator"):
        return
    value = top.rest["aggregator"]
    kinds = {"mean": pb.Aggregator.KIND_MEAN, "median": pb.Aggregator.KIND_MEDIAN,
             "trimmed_mean": pb.Aggregator.KIND_TRIMMED_MEAN, "multi_krum": pb.Aggregator.KIND_MULTI_KRUM,
             "norm_bound": pb.Aggregator.KIND_NORM_BOUND}
    if isinstance(value, str):
        top.rest.pop("aggregator")
        if value not in ("mean", "median"):
            raise top.fail(f"unknown aggregator {value!r}: \"mean\", \"median\", or an [aggregator] table")
        kind = value
        a = pb.Aggregator(kind=kinds[kind])
    else:
        t = top.table("aggregator")
        assert t is not None
        kind = t.string("kind")
        if kind not in kinds:
            raise t.fail(f"aggregator.kind: unknown rule {kind!r}, expected one of {', '.join(kinds)}")
        a = pb.Aggregator(kind=kinds[kind])
        if kind == "trimmed_mean":
            a.trim = t.number("trim")
        elif kind == "multi_krum":
            a.byzantine = t.integer("byzantine", _U32)
            a.select = t.integer("select", _U32, 0)
        elif kind == "norm_bound":
            a.factor = t.number("factor")
        t.done()
    # The mean is FedAvg's default and travels as an absent aggregator, as from the CLI.
    if kind != "mean":
        plan.aggregator.CopyFrom(a)


def _privacy(t: _Table) -> pb.PrivacyPlan:
    p = pb.PrivacyPlan(
        mechanism=t.choice("mechanism", {"central": pb.DP_MECHANISM_CENTRAL, "local": pb.DP_MECHANISM_LOCAL}),
        noise_multiplier=t.number("noise_multiplier"),
        over_bound=t.choice("over_bound", {"reject": pb.OVER_BOUND_REJECT, "reclip": pb.OVER_BOUND_RECLIP}, "reject"),
        expected_clients=t.integer("expected_clients", _U32),
    )
    clip = t.optional_number("clip_norm")
    adaptive = t.table("adaptive")
    if (clip is None) == (adaptive is None):
        raise t.fail("[privacy] needs exactly one of clip_norm (fixed clipping) or [privacy.adaptive]")
    if clip is not None:
        p.fixed.CopyFrom(pb.FixedClipping(norm=clip))
    if adaptive is not None:
        p.adaptive.CopyFrom(pb.AdaptiveClipping(
            initial_norm=adaptive.number("initial_norm"),
            target_quantile=adaptive.number("target_quantile", 0.5),
            learning_rate=adaptive.number("learning_rate", 0.2),
            count_noise_std=adaptive.number("count_noise_std", 0.0),
        ))
        adaptive.done()
    rate = t.optional_number("sampling_rate")
    if rate is not None:
        p.poisson.CopyFrom(pb.PoissonSampling(rate=rate))
    t.done()
    return p


def _promotion(t: _Table | None) -> pb.Promotion:
    if t is None:
        t = _Table({}, "promotion", "")
    to = t.string("promote_to", "none")
    metric = t.string("metric", "accuracy")
    if to not in ("none", "canary", "serving"):
        raise t.fail(f"promotion.promote_to: unknown value {to!r}, expected none, canary or serving")
    if metric not in ("accuracy", "loss"):
        raise t.fail(f"promotion.metric: unknown value {metric!r}, expected accuracy or loss")
    p = pb.Promotion(
        promote_to=to,
        metric=metric,
        tolerance=t.number("tolerance", 0.0),
        min_samples=t.integer("min_samples", _U64, 1),
        max_region_gap=t.number("max_region_gap", 0.0),
        canary_fraction=t.number("canary_fraction", 0.1),
        canary_min_requests=t.integer("canary_min_requests", _U64, 0),
        canary_max_error_rate=t.number("canary_max_error_rate", 0.0),
        retrain_on_drift=t.boolean("retrain_on_drift", False),
    )
    t.done()
    return p


def duration_seconds(text: str) -> float | None:
    """``"90s"``, ``"30m"``, ``"6h"``, ``"1.5d"`` → seconds; ``None`` when malformed (as the
    CLI reads ``schedule.max_delay``)."""
    text = text.strip()
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    if not text or text[-1] not in units:
        return None
    number = text[:-1].strip()
    if not number or "_" in number:
        return None
    try:
        n = float(number)
    except ValueError:
        return None
    return n * units[text[-1]] if math.isfinite(n) and n >= 0 else None


def _schedule(t: _Table | None) -> pb.Schedule:
    if t is None:
        return pb.Schedule()
    s = pb.Schedule(prefer_low_carbon=t.boolean("prefer_low_carbon", False))
    if t.has("max_delay"):
        text = t.string("max_delay")
        seconds = duration_seconds(text)
        if seconds is None:
            raise t.fail(f'schedule.max_delay: {text!r} is not a duration like "90s", "30m", "6h" or "1d"')
        s.max_delay_seconds = seconds
    t.done()
    return s


def _compression(t: _Table | None) -> pb.Compression:
    if t is None:
        return pb.Compression(kind=pb.COMPRESSION_KIND_NONE)
    kind = t.string("kind")
    kinds = {"none": pb.COMPRESSION_KIND_NONE, "int8": pb.COMPRESSION_KIND_INT8, "top_k": pb.COMPRESSION_KIND_TOP_K}
    if kind not in kinds:
        raise t.fail(f"compression.kind: unknown value {kind!r}, expected none, int8 or top_k")
    c = pb.Compression(kind=kinds[kind])
    if kind == "top_k":
        if not t.has("fraction"):
            raise t.fail("compression kind top_k needs a fraction in (0, 1]")
        c.fraction = t.number("fraction")
    elif t.has("fraction"):
        raise t.fail("compression.fraction applies to kind top_k only")
    t.done()
    return c


def plan_from_dict(plan: Mapping[str, Any], origin: str = "<dict>") -> pb.RunPlan:
    """Builds the ``RunPlan`` of a plan given as a dict shaped like the TOML file.

    Raises:
        PlanError: naming the unknown, missing or mistyped key (``origin`` names the plan).
    """
    t = _Table(plan, "", origin)
    version = t.integer("version", _U32)
    if version != PLAN_VERSION:
        raise t.fail(f"version {version} is not supported (expected {PLAN_VERSION})")
    model = t.table("model", required=True)
    assert model is not None
    out = pb.RunPlan(model=_model(model))
    if t.has("initial_checkpoint"):
        out.initial_checkpoint = t.string("initial_checkpoint")
    _strategy(t, out)
    _aggregator(t, out)
    out.rounds = t.integer("rounds", _U32)
    out.clients_per_round = t.integer("clients_per_round", _U32)
    out.min_clients = t.integer("min_clients", _U32)
    out.over_selection = t.number("over_selection", 0.0)
    out.round_deadline_seconds = t.number("round_deadline_seconds")
    local = t.table("local", required=True)
    assert local is not None
    out.local.CopyFrom(pb.LocalTraining(
        epochs=local.integer("epochs", _U32),
        batch_size=local.integer("batch_size", _U32),
        learning_rate=local.number("learning_rate"),
        proximal_mu=local.number("proximal_mu", 0.0),
        optimizer=local.choice("optimizer", {"sgd": pb.OPTIMIZER_SGD, "adam": pb.OPTIMIZER_ADAM}, "sgd"),
        momentum=local.number("momentum", 0.0),
    ))
    local.done()
    regions = t.raw("regions", False) or []
    if not isinstance(regions, list) or not all(isinstance(r, str) for r in regions):
        raise t.fail(f"regions must be a list of strings, got {regions!r}")
    out.regions.extend(regions)
    out.seed = t.integer("seed", _U64, 0)
    evaluation = t.table("evaluation")
    if evaluation is not None:
        out.evaluation.CopyFrom(pb.Evaluation(
            every_rounds=evaluation.integer("every_rounds", _U32),
            clients=evaluation.integer("clients", _U32, 0),
        ))
        evaluation.done()
    else:
        out.evaluation.CopyFrom(pb.Evaluation())
    privacy = t.table("privacy")
    if privacy is not None:
        out.privacy.CopyFrom(_privacy(privacy))
    out.priority = t.integer("priority", _I32, 0)
    out.promotion.CopyFrom(_promotion(t.table("promotion")))
    out.schedule.CopyFrom(_schedule(t.table("schedule")))
    out.compression.CopyFrom(_compression(t.table("compression")))
    t.done()
    return out


def plan_from_toml(text: str, origin: str = "<string>") -> pb.RunPlan:
    """Parses plan TOML text; see :func:`plan_from_dict`.

    Raises:
        PlanError: bad TOML (with line and column) or a malformed plan.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PlanError(f"plan {origin}: {e}") from None
    return plan_from_dict(data, origin)


def load_plan(plan: PlanSource) -> pb.RunPlan:
    """A ``RunPlan`` from a TOML file path, a dict shaped like the file, or a ``RunPlan``.

    Raises:
        PlanError: the file cannot be read, or the plan is malformed (naming the key).
    """
    if isinstance(plan, pb.RunPlan):
        return plan
    if isinstance(plan, Mapping):
        return plan_from_dict(plan)
    path = Path(plan)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PlanError(f"cannot read plan {path}: {e.strerror or e}") from None
    return plan_from_toml(text, str(path))

