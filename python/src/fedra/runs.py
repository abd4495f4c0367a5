"""Runs as the coordinator reports them (``GetRun``/``ListRuns``), read into plain
dataclasses, and their per-round metrics as a table: a pandas ``DataFrame`` when pandas is
installed, a list of dicts otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedra.v1 import fedra_pb2 as pb

STATES: dict[int, str] = {
    pb.RUN_STATE_QUEUED: "queued",
    pb.RUN_STATE_RUNNING: "running",
    pb.RUN_STATE_SUCCEEDED: "succeeded",
    pb.RUN_STATE_FAILED: "failed",
    pb.RUN_STATE_CANCELLED: "cancelled",
    pb.RUN_STATE_PENDING_APPROVAL: "pending_approval",
    pb.RUN_STATE_BLOCKED_BY_POLICY: "blocked_by_policy",
}
"""Run states by wire value, named as ``fedra run list`` prints them."""

ENDED = frozenset({"succeeded", "failed", "cancelled"})


def state_name(value: int) -> str:
    """The name of a wire ``RunState``; ``unknown(N)`` for one this package does not know."""
    return STATES.get(value, f"unknown({value})")


@dataclass(frozen=True)
class RoundRow:
    """One round attempt: its phase, counts and the clients' sample-weighted mean metrics
    (``None`` before the round aggregated, and for private runs, which withhold them)."""

    round: int
    phase: str
    selected: int
    reported: int
    samples: int
    loss_before: float | None
    loss_after: float | None
    accuracy: float | None
    train_seconds: float | None
    checkpoint: str | None
    failure: str | None


@dataclass(frozen=True)
class Evaluation:
    """Federated evaluation of one round's checkpoint: the mean over every region
    (``region`` ``None``) or one region's."""

    round: int
    region: str | None
    clients: int
    samples: int
    loss: float
    accuracy: float


@dataclass(frozen=True)
class Run:
    """A run's state. ``rounds`` and ``evaluations`` are empty in :meth:`Client.list_runs`
    (``ListRuns`` leaves them out; :meth:`Client.get_run` has them)."""

    id: str
    state: str
    model_name: str
    total_rounds: int
    completed_rounds: int
    published_checkpoint: str | None
    failure: str | None
    created_at: str
    rounds: tuple[RoundRow, ...]
    evaluations: tuple[Evaluation, ...]
    plan: pb.RunPlan

    @property
    def ended(self) -> bool:
        """Whether the run succeeded, failed or was cancelled."""
        return self.state in ENDED

    @classmethod
    def from_pb(cls, r: pb.RunInfo) -> Run:
        rounds = []
        for s in r.rounds:
            m = s.metrics if s.HasField("metrics") else None
            rounds.append(
                RoundRow(
                    round=s.round,
                    phase=s.phase,
                    selected=s.selected,
                    reported=s.reported,
                    samples=s.samples,
                    loss_before=m.loss_before if m else None,
                    loss_after=m.loss_after if m else None,
                    accuracy=m.accuracy_after if m else None,
                    train_seconds=m.train_seconds if m else None,
                    checkpoint=s.checkpoint_id or None,
                    failure=s.failure or None,
                )
            )
        evaluations = tuple(
            Evaluation(e.round, e.region or None, e.clients, e.samples, e.loss, e.accuracy) for e in r.evaluations
        )
        return cls(
            id=r.run_id,
            state=state_name(r.state),
            model_name=r.plan.model.name,
            total_rounds=r.plan.rounds,
            completed_rounds=r.completed_rounds,
            published_checkpoint=r.published_checkpoint or None,
            failure=r.failure or None,
            created_at=r.created_at,
            rounds=tuple(rounds),
            evaluations=evaluations,
            plan=r.plan,
        )


METRIC_COLUMNS = (
    "round", "phase", "selected", "reported", "samples", "loss_before", "loss_after", "accuracy",
    "train_seconds", "eval_loss", "eval_accuracy", "eval_samples", "checkpoint", "failure",
)
"""The columns of :func:`metrics_table`: a round's training metrics, then the federated
evaluation of its checkpoint over every region (``None`` when it was not evaluated)."""


def metrics_rows(run: Run) -> list[dict[str, Any]]:
    """One dict per round attempt, with :data:`METRIC_COLUMNS` as keys."""
    overall = {e.round: e for e in run.evaluations if e.region is None}
    rows = []
    for r in run.rounds:
        e = overall.get(r.round) if r.phase == "done" else None
        rows.append({
            "round": r.round, "phase": r.phase, "selected": r.selected, "reported": r.reported,
            "samples": r.samples, "loss_before": r.loss_before, "loss_after": r.loss_after,
            "accuracy": r.accuracy, "train_seconds": r.train_seconds,
            "eval_loss": e.loss if e else None, "eval_accuracy": e.accuracy if e else None,
            "eval_samples": e.samples if e else None, "checkpoint": r.checkpoint, "failure": r.failure,
        })
    return rows


def metrics_table(run: Run) -> Any:
    """The run's per-round metrics: a ``pandas.DataFrame`` (missing values as NaN/None) when
    pandas is installed, else :func:`metrics_rows`' list of dicts."""
    rows = metrics_rows(run)
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
