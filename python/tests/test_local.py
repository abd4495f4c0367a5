"""What works without a coordinator: the optional imports' fallbacks and the layouts."""

from __future__ import annotations

import subprocess
import sys

import pytest

import fedra
from fedra.model import Cnn, ConvLayer, Mlp, layout
from fedra.runs import METRIC_COLUMNS, Evaluation, RoundRow, Run, metrics_table
from fedra.v1 import fedra_pb2 as pb


def test_fedra_torch_without_torch_says_what_to_install() -> None:
    code = "import sys; sys.modules['torch'] = None\nimport fedra\ntry:\n import fedra.torch\nexcept ImportError as e:\n print(e)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "fedra.torch needs PyTorch: pip install torch" in out.stdout, out


def test_metrics_are_dicts_without_pandas(monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run("run-1", "succeeded", "m", 1, 1, "run-1.r0001", None, "", (
        RoundRow(1, "done", 2, 2, 40, 1.0, 0.5, 0.75, 0.1, "run-1.r0001", None),
    ), (Evaluation(1, None, 2, 10, 0.4, 0.8), Evaluation(1, "eu", 1, 5, 0.3, 0.9)), pb.RunPlan())
    frame = metrics_table(run)
    assert list(frame.columns) == list(METRIC_COLUMNS) and frame.eval_accuracy[0] == 0.8
    monkeypatch.setitem(sys.modules, "pandas", None)
    rows = metrics_table(run)
    assert rows == [{"round": 1, "phase": "done", "selected": 2, "reported": 2, "samples": 40, "loss_before": 1.0,
                     "loss_after": 0.5, "accuracy": 0.75, "train_seconds": 0.1, "eval_loss": 0.4,
                     "eval_accuracy": 0.8, "eval_samples": 10, "checkpoint": "run-1.r0001", "failure": None}]


def test_layouts_are_the_documented_ones() -> None:
    assert [n for n, _ in layout(Mlp(784, (200, 200), 10))] == [
        "hidden.0.weight", "hidden.0.bias", "hidden.1.weight", "hidden.1.bias", "output.weight", "output.bias"]
    # The classic FedAvg CNN for 28x28 (types/src/model.rs's test).
    cnn = layout(Cnn(28, 28, 1, (ConvLayer(32, 5), ConvLayer(64, 5)), (512,), 10))
    assert cnn[0] == ("conv.0.weight", (32, 1, 5, 5))
    assert cnn[2] == ("conv.1.weight", (64, 32, 5, 5))
    assert cnn[4] == ("dense.0.weight", (7 * 7 * 64, 512))


def test_dict_and_toml_plans_are_the_same_message() -> None:
    text = """version = 1
rounds = 3
clients_per_round = 2
min_clients = 2
round_deadline_seconds = 60
strategy = "fed_avg"
[model]
name = "m"
kind = "mlp"
input_dim = 4
hidden = [3]
classes = 2
[local]
epochs = 1
batch_size = 8
learning_rate = 0.1
[schedule]
max_delay = "1.5h"
"""
    from_toml = fedra.plan_from_toml(text)
    assert from_toml.schedule.max_delay_seconds == 5400.0
    assert from_toml == fedra.plan_from_dict({
        "version": 1, "rounds": 3, "clients_per_round": 2, "min_clients": 2, "round_deadline_seconds": 60,
        "strategy": "fed_avg", "model": {"name": "m", "kind": "mlp", "input_dim": 4, "hidden": [3], "classes": 2},
        "local": {"epochs": 1, "batch_size": 8, "learning_rate": 0.1}, "schedule": {"max_delay": "1.5h"},
    })
    with pytest.raises(fedra.PlanError, match=r'schedule.max_delay: .*"6 hours" is not a duration|schedule.max_delay'):
        fedra.plan_from_toml(text.replace('"1.5h"', '"6 hours"'))
