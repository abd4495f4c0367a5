"""Submit, watch, list, metrics, pull and load, against the live federation; then the
PyTorch model's predictions against the burn model's, as the inference node
(``fedra-infer``, burn) serves the same checkpoint."""

from __future__ import annotations

import io
import math
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

import fedra
import fedra.torch
from federation import CLASSES, DIM, Federation, fedra_cli, wait_for
from fedra.progress import Progress
from fedra.v1 import fedra_pb2 as pb
from fedra.v1 import fedra_pb2_grpc as rpc

PLAN = """\
version = 1
rounds = 2
clients_per_round = 3
min_clients = 3
round_deadline_seconds = 120
regions = ["eu", "us"]
seed = 11

[model]
name = "{name}"
{model}

[local]
epochs = 1
batch_size = 16
learning_rate = 0.1

[evaluation]
every_rounds = 1

[promotion]
promote_to = "serving"
"""

MODELS = {
    "py-lr": 'kind = "logistic_regression"\ninput_dim = 32\nclasses = 3',
    # Square hidden layers: a missing transpose keeps the shapes and changes the outputs.
    "py-mlp": 'kind = "mlp"\ninput_dim = 32\nhidden = [8, 8]\nclasses = 3',
    # Two channels of 4x4: the flatten order (C, H, W) of a 3x2x2 map matters.
    "py-cnn": 'kind = "cnn"\nheight = 4\nwidth = 4\nchannels = 2\n'
    'conv = [{ filters = 3, kernel = 3 }]\ndense = [6]\nclasses = 3',
}

# A fixed input: five rows, some far outside the training distribution.
ROWS = np.random.default_rng(20261201).normal(0.0, 2.0, size=(5, DIM)).astype(np.float32)


def burn_probabilities(address: str, checkpoint: str) -> np.ndarray:
    """The inference node's softmax over ROWS, once it serves ``checkpoint``."""
    with grpc.insecure_channel(address) as channel:
        stub = rpc.InferenceServiceStub(channel)
        request = pb.PredictRequest(features=DIM, inputs=ROWS.ravel().tolist())

        def served() -> pb.PredictResponse | None:
            try:
                r = stub.Predict(request, timeout=10)
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.UNAVAILABLE:  # nothing verified and loaded yet
                    return None
                raise
            return r if r.checkpoint_id == checkpoint else None

        response = wait_for(f"the inference node serving {checkpoint}", served, 90)
    assert response.classes == CLASSES
    return np.array(response.probabilities, dtype=np.float32).reshape(len(ROWS), CLASSES)


@pytest.mark.parametrize("name", list(MODELS))
def test_submit_watch_pull_and_load_match_burn(
    name: str, fed: Federation, client: fedra.Client, alice_tls: Path, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.format(name=name, model=MODELS[name]))

    run = client.run(plan, progress="lines", timeout=300)
    assert run.state == "succeeded", run
    assert (run.completed_rounds, run.total_rounds, run.model_name) == (2, 2, name)
    assert run.published_checkpoint == f"{run.id}.r0002"

    assert run.id in [r.id for r in client.list_runs()]

    frame = client.metrics(run.id)
    assert list(frame.columns)[:5] == ["round", "phase", "selected", "reported", "samples"]
    done = frame[frame.phase == "done"]
    assert list(done["round"]) == [1, 2]
    assert (done.reported == 3).all() and (done.samples > 0).all()
    assert all(math.isfinite(x) and x > 0 for x in done.loss_after)
    assert all(0.0 <= x <= 1.0 for x in done.eval_accuracy)
    assert list(done.checkpoint) == [f"{run.id}.r0001", f"{run.id}.r0002"]

    listed = client.list_checkpoints(model=name, run_id=run.id)
    assert sorted(c.round for c in listed) == [1, 2]
    assert [c.published for c in sorted(listed, key=lambda c: c.round)] == [False, True]

    checkpoint = client.pull(run.published_checkpoint)
    assert checkpoint.signed_by is not None
    assert all(t.dtype == np.float32 for t in checkpoint.tensors.values())
    model = fedra.torch.load(checkpoint)
    assert model.fedra_checkpoint == checkpoint.id
    with torch.no_grad():
        logits = model(torch.from_numpy(ROWS))
    torch_probs = torch.softmax(logits, dim=1).numpy()

    node, address = fed.start_inference_node("eu", name)
    try:
        burn_probs = burn_probabilities(address, checkpoint.id)
    finally:
        node.stop()
    gap = float(np.abs(torch_probs - burn_probs).max())
    print(f"{name}: max |PyTorch - burn| probability = {gap:.2e}")
    assert gap <= 1e-5, f"PyTorch {torch_probs} differs from burn {burn_probs} by {gap}"
    assert (torch_probs.argmax(1) == burn_probs.argmax(1)).all()

    # The same checkpoint pulled by the CLI loads into the same module.
    pulled = tmp_path / "pulled"
    fedra_cli(["--coordinator", fed.address, "--tls-dir", str(alice_tls), "checkpoint", "pull", checkpoint.id,
               "-o", str(pulled)], tmp_path)
    from_cli = fedra.torch.load(pulled, trust=alice_tls / "checkpoint-signing.pub")
    with torch.no_grad():
        assert torch.equal(from_cli(torch.from_numpy(ROWS)), logits)


def test_replayed_events_show_progress(client: fedra.Client, tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.format(name="py-progress", model=MODELS["py-lr"]).replace("rounds = 2", "rounds = 1"))
    run = client.run(plan, progress="none", timeout=300)
    # After the end, WatchRun replays the history and ends: as lines, and as a bar.
    lines = io.StringIO()
    shown = Progress(run.id, run.total_rounds, "lines", out=lines)
    for e in client.events(run.id, timeout=60):
        shown.event(e)
    text = lines.getvalue()
    assert f"round 1: published {run.id}.r0001" in text, text
    assert text.rstrip().endswith("run succeeded"), text
    bar = io.StringIO()
    shown = Progress(run.id, run.total_rounds, "bar", out=bar)
    for e in client.events(run.id, timeout=60):
        shown.event(e)
    shown.close()
    assert shown.bar is not None and shown.bar.n == 1
    assert "1/1" in bar.getvalue(), bar.getvalue()


def test_saved_checkpoint_reopens_and_tampering_is_refused(client: fedra.Client, alice_tls: Path,
                                                           tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.format(name="py-saved", model=MODELS["py-lr"]).replace("rounds = 2", "rounds = 1"))
    run = client.run(plan, progress="none", timeout=300)
    assert run.published_checkpoint is not None
    checkpoint = client.pull(run.published_checkpoint)
    checkpoint.save(tmp_path / "cp")
    trust = alice_tls / "checkpoint-signing.pub"
    again = fedra.open_checkpoint(tmp_path / "cp", trust=trust)
    assert all(np.array_equal(again.tensors[k], v) for k, v in checkpoint.tensors.items())

    weights = bytearray((tmp_path / "cp" / "model.safetensors").read_bytes())
    weights[-1] ^= 0x01
    (tmp_path / "cp" / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(fedra.UntrustedCheckpointError, match="weights file sha256 .* differs from the manifest's"):
        fedra.open_checkpoint(tmp_path / "cp", trust=trust)

    manifest = (tmp_path / "cp" / "manifest.json").read_bytes()
    checkpoint.save(tmp_path / "cp")
    # One more byte (still valid JSON, same content): the signature covers the exact bytes.
    (tmp_path / "cp" / "manifest.json").write_bytes(manifest + b" ")
    with pytest.raises(fedra.UntrustedCheckpointError, match="does not match the manifest's bytes"):
        fedra.open_checkpoint(tmp_path / "cp", trust=trust)
    with pytest.raises(fedra.UntrustedCheckpointError, match="no trusted checkpoint signing key"):
        fedra.open_checkpoint(tmp_path / "cp")
