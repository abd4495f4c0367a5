"""fedra from Python: submit run plans to a fedra coordinator, watch them, read their
metrics, and pull checkpoints into numpy arrays or (``fedra.torch.load``) PyTorch modules.

    import fedra, fedra.torch
    with fedra.connect("https://127.0.0.1:7070", tls_dir="alice-tls") as client:
        run = client.run("sim/plans/quickstart.toml")      # submit, then a progress bar
        print(client.metrics(run.id))                       # a DataFrame with pandas
        checkpoint = client.pull(run.published_checkpoint)  # verified, numpy tensors
        model = fedra.torch.load(checkpoint)                # needs torch

The gRPC stubs (``fedra.v1``) are generated from ``proto/fedra/v1/fedra.proto`` when the
package is built.
"""

from fedra.checkpoint import Checkpoint, TrustedKeys, open_checkpoint
from fedra.client import CheckpointSummary, Client, connect
from fedra.errors import (
    FedraError,
    PlanError,
    RefusedError,
    RunEndedError,
    UnreachableError,
    UntrustedCheckpointError,
)
from fedra.plan import load_plan, plan_from_dict, plan_from_toml
from fedra.runs import Evaluation, RoundRow, Run

__all__ = [
    "Checkpoint",
    "CheckpointSummary",
    "Client",
    "Evaluation",
    "FedraError",
    "PlanError",
    "RefusedError",
    "RoundRow",
    "Run",
    "RunEndedError",
    "TrustedKeys",
    "UnreachableError",
    "UntrustedCheckpointError",
    "connect",
    "load_plan",
    "open_checkpoint",
    "plan_from_dict",
    "plan_from_toml",
]
