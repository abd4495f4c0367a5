"""Showing a run's events while it is watched: a tqdm progress bar over its rounds when tqdm
is installed (in a notebook too), else one plain line per event, as ``fedra run watch``
prints them on a pipe."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from fedra.runs import state_name
from fedra.v1 import fedra_pb2 as pb


def _metrics(m: pb.TrainingMetrics) -> str:
    return f"loss {m.loss_before:.4f} -> {m.loss_after:.4f}, acc {m.accuracy_after:.4f}"


def describe(e: pb.RunEvent) -> str | None:
    """One line for an event, ``None`` for one without a kind (a newer coordinator's)."""
    kind = e.WhichOneof("kind")
    r = e.round
    if kind == "selected":
        return f"round {r}: selected {len(e.selected.clients)} clients (target {e.selected.target})"
    if kind == "update_received":
        u = e.update_received
        return f"round {r}: update from {u.client_id} ({u.region}), {u.reported}/{u.target}"
    if kind == "aggregated":
        a = e.aggregated
        return f"round {r}: aggregated {a.clients} updates, {a.samples} samples, {_metrics(a.metrics)}"
    if kind == "published":
        return f"round {r}: published {e.published.checkpoint_id} to {', '.join(e.published.regions)}"
    if kind == "evaluated":
        overall = [x for x in e.evaluated.results if not x.region]
        if overall:
            x = overall[0]
            return f"round {r}: evaluated on {x.samples} held-out samples, loss {x.loss:.4f}, acc {x.accuracy:.4f}"
        return f"round {r}: evaluated"
    if kind == "round_failed":
        return f"round {r}: failed: {e.round_failed.reason}"
    if kind == "blocked":
        return f"round {r}: blocked by policy: {e.blocked.reason}"
    if kind == "run_finished":
        reason = f": {e.run_finished.reason}" if e.run_finished.reason else ""
        return f"run {state_name(e.run_finished.state)}{reason}"
    return None


class Progress:
    """Displays events: ``bar`` (tqdm when installed), ``lines`` or ``none``."""

    def __init__(self, run_id: str, total_rounds: int, mode: str = "bar", out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.bar: Any = None
        self.mode = mode
        self.done: set[int] = set()
        if mode == "bar":
            try:
                from tqdm.auto import tqdm
            except ImportError:
                self.mode = "lines"
            else:
                self.bar = tqdm(total=total_rounds, desc=run_id, unit="round", file=self.out)

    def event(self, e: pb.RunEvent) -> None:
        """Shows one event."""
        if self.mode == "none":
            return
        line = describe(e)
        if line is None:
            return
        if self.bar is None:
            print(line, file=self.out, flush=True)
            return
        kind = e.WhichOneof("kind")
        if kind == "published" and e.round not in self.done:
            # Replayed history and live events may repeat a round: count each once.
            self.done.add(e.round)
            self.bar.update(1)
        elif kind == "aggregated":
            m = e.aggregated.metrics
            self.bar.set_postfix(loss=f"{m.loss_after:.4f}", acc=f"{m.accuracy_after:.4f}")
        elif kind == "evaluated":
            overall = [x for x in e.evaluated.results if not x.region]
            if overall:
                self.bar.set_postfix(eval_acc=f"{overall[0].accuracy:.4f}")
        elif kind in ("round_failed", "blocked", "run_finished"):
            self.bar.write(line, file=self.out)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
