"""PyTorch baseline for bench/training.sh (CPU) and bench/gpu.sh (CUDA): the same models as
the Rust bench, same shapes, softmax cross-entropy, one epoch over random samples; prints
JSON lines like the Rust bench.

- mlp-784-200-200-10 (ReLU), batch 64, SGD lr 0.01 and Adam;
- cnn-28x28-fedavg (`--cnn`): conv 5x5x32 (padding 2) → ReLU → 2x2 max-pool, conv 5x5x64 →
  ReLU → pool, dense 512 → ReLU, 10 classes; batch 32, SGD.

`--device cuda` keeps the data on the GPU (PyTorch's best case) and synchronises before each
timer read; `--scale K` multiplies the sample counts as FEDRA_BENCH_SCALE does for burn.
Install: pip install torch numpy."""
import argparse
import json
import time

import numpy as np
import torch

REPEATS = 5


def mlp(d, k):
    return torch.nn.Sequential(
        torch.nn.Linear(d, 200), torch.nn.ReLU(), torch.nn.Linear(200, 200), torch.nn.ReLU(), torch.nn.Linear(200, k)
    )


def cnn(k):
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2, 2),
        torch.nn.Conv2d(32, 64, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2, 2),
        torch.nn.Flatten(), torch.nn.Linear(64 * 7 * 7, 512), torch.nn.ReLU(), torch.nn.Linear(512, k),
    )


def case(name, optimizer_name, threads, device, n, batch, shape, build):
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    k = 10
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(n, *shape)).astype(np.float32)).to(device)
    y = torch.from_numpy(np.random.default_rng(2).integers(0, k, size=n)).to(device)
    model = build(k).to(device)
    loss_fn = torch.nn.CrossEntropyLoss()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rates = []
    for i in range(REPEATS + 1):
        opt = torch.optim.SGD(model.parameters(), lr=0.01) if optimizer_name == "sgd" else torch.optim.Adam(model.parameters(), lr=0.01)
        perm = torch.randperm(n, device=device)
        sync()
        start = time.perf_counter()
        for b in range(0, n, batch):
            idx = perm[b : b + batch]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        sync()
        elapsed = time.perf_counter() - start
        if i > 0:
            rates.append(n / elapsed)
    rates.sort()
    print(json.dumps({"model": name, "device": device, "threads": threads, "torch": torch.__version__,
                      "samples_per_s": round(rates[len(rates) // 2], 1)}), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cnn", action="store_true", help="also the 28x28 CNN")
    ap.add_argument("--scale", type=int, default=1)
    a = ap.parse_args()
    threads_list = (1, torch.get_num_threads()) if a.device == "cpu" else (torch.get_num_threads(),)
    for threads in threads_list:
        case("mlp-784-200-200-10", "sgd", threads, a.device, 20_000 * a.scale, 64, (784,), lambda k: mlp(784, k))
        case("mlp-784-200-200-10-adam", "adam", threads, a.device, 20_000 * a.scale, 64, (784,), lambda k: mlp(784, k))
        if a.cnn:
            case("cnn-28x28-fedavg", "sgd", threads, a.device, 1_000 * a.scale, 32, (1, 28, 28), cnn)
