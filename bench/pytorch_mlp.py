"""PyTorch baseline for bench/training.sh: the same 784-200-200-10 MLP (ReLU), softmax
cross-entropy, batch 64, SGD lr 0.01 (and Adam), one epoch over 20,000 random samples,
on CPU. Prints JSON lines like the Rust bench. Install: pip install torch numpy."""
import json
import time

import numpy as np
import torch

REPEATS = 5


def case(name, optimizer_name, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    n, d, k, batch = 20_000, 784, 10, 64
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(n, d)).astype(np.float32))
    y = torch.from_numpy(np.random.default_rng(2).integers(0, k, size=n))
    model = torch.nn.Sequential(
        torch.nn.Linear(d, 200), torch.nn.ReLU(), torch.nn.Linear(200, 200), torch.nn.ReLU(), torch.nn.Linear(200, k)
    )
    loss_fn = torch.nn.CrossEntropyLoss()
    rates = []
    for i in range(REPEATS + 1):
        opt = torch.optim.SGD(model.parameters(), lr=0.01) if optimizer_name == "sgd" else torch.optim.Adam(model.parameters(), lr=0.01)
        perm = torch.randperm(n)
        start = time.perf_counter()
        for b in range(0, n, batch):
            idx = perm[b : b + batch]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        elapsed = time.perf_counter() - start
        if i > 0:
            rates.append(n / elapsed)
    rates.sort()
    print(json.dumps({"model": name, "threads": threads, "torch": torch.__version__, "samples_per_s": round(rates[len(rates) // 2], 1)}))


if __name__ == "__main__":
    for threads in (1, torch.get_num_threads()):
        case("mlp-784-200-200-10", "sgd", threads)
        case("mlp-784-200-200-10-adam", "adam", threads)
