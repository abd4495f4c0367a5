# %% [markdown]
# # fedra from Python, after the Rust quickstart
#
# The quickstart (`cargo run --release -p fedra-sim -- quickstart`) leaves its coordinator's
# store, checkpoints and throw-away CA in `fedra-quickstart/`. Serve them again with the real
# coordinator and give yourself an identity of that CA (the README's "From Python" section
# has the commands), then run this file as a script or cell by cell (`# %%` cells work in
# VS Code and Jupyter's jupytext):
#
#     python python/examples/quickstart.py --tls-dir fedra-quickstart/you-tls
#
# It connects, lists the runs, shows the latest run's per-round metrics, pulls the latest
# published checkpoint (verified against the deployment's signing key), loads it into a
# PyTorch module and predicts.

# %%
import argparse
import sys

import numpy as np

import fedra

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--coordinator", default=None, help="default: $FEDRA_COORDINATOR or https://127.0.0.1:7070")
parser.add_argument("--tls-dir", default=None, help="your identity directory (default: $FEDRA_TLS_DIR)")
parser.add_argument("--insecure", action="store_true", help="plain text, to an --insecure coordinator")
parser.add_argument("--trust", default=None, help="checkpoint-signing.pub (default: the identity directory's)")
args, _ = parser.parse_known_args()  # known only: notebooks pass their own arguments

client = fedra.connect(args.coordinator, tls_dir=args.tls_dir, insecure=args.insecure, trust=args.trust)

# %% The runs you may see (a scientist sees their own; compliance and admins see all).
runs = client.list_runs()
for run in runs:
    print(f"{run.id}  {run.state:<10} {run.model_name:<16} {run.completed_rounds}/{run.total_rounds}  "
          f"{run.published_checkpoint or '-'}")

# %% The latest run's metrics: a pandas DataFrame when pandas is installed.
if runs:
    print(client.metrics(runs[-1].id))

# %% The most recent published checkpoint, as numpy arrays.
published = sorted((c for c in client.list_checkpoints() if c.published), key=lambda c: c.created_at)
if not published:
    sys.exit("no published checkpoint yet: run the quickstart first")
checkpoint = client.pull(published[-1].id)
print(f"{checkpoint.id}: {checkpoint.architecture}, signed by key {checkpoint.signed_by}")
for name, tensor in checkpoint.tensors.items():
    print(f"  {name:<16} {tensor.shape}")

# %% Into PyTorch (pip install torch), and predict.
try:
    import torch

    import fedra.torch
except ImportError as e:
    sys.exit(str(e))

model = fedra.torch.load(checkpoint)
print(model)
rows = np.random.default_rng(0).normal(size=(4, model.input_dim)).astype(np.float32)
with torch.no_grad():
    probabilities = torch.softmax(model(torch.from_numpy(rows)), dim=1)
for row, p in enumerate(probabilities):
    print(f"row {row}: class {int(p.argmax())} (p = {float(p.max()):.3f})")

# %% For logistic regression the numpy arrays alone give the same logits: x · W + b.
if "linear.weight" in checkpoint.tensors:
    logits = rows @ checkpoint.tensors["linear.weight"] + checkpoint.tensors["linear.bias"]
    with torch.no_grad():
        assert np.allclose(logits, model(torch.from_numpy(rows)).numpy(), atol=1e-5)
    print("numpy and PyTorch agree")

client.close()
