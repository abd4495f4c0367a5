"""Loads a fedra checkpoint with the Python `safetensors` package and checks it against
what fedra says it wrote: tensor names, shapes, dtype and every value.

Usage: python3 check_checkpoint.py MODEL.safetensors EXPECTED.json
EXPECTED.json: {"tensors": [{"name": ..., "shape": [...], "values": [...]}, ...],
                "metadata": {"checkpoint_id": ...}}
Exits 0 when everything matches; otherwise prints one line per mismatch and exits 1.
"""
import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file


def main() -> int:
    path, expected_path = sys.argv[1], sys.argv[2]
    expected = json.load(open(expected_path))
    tensors = load_file(path)
    problems = []
    want_names = [t["name"] for t in expected["tensors"]]
    if sorted(tensors) != sorted(want_names):
        problems.append(f"names {sorted(tensors)} != {sorted(want_names)}")
    for t in expected["tensors"]:
        got = tensors.get(t["name"])
        if got is None:
            continue
        if got.dtype != np.float32:
            problems.append(f"{t['name']}: dtype {got.dtype}")
        if list(got.shape) != t["shape"]:
            problems.append(f"{t['name']}: shape {list(got.shape)} != {t['shape']}")
        want = np.array(t["values"], dtype=np.float32).reshape(t["shape"])
        if not np.array_equal(got, want):
            problems.append(f"{t['name']}: values differ (max |diff| {np.max(np.abs(got - want))})")
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
    for key, value in expected.get("metadata", {}).items():
        if meta.get(key) != value:
            problems.append(f"metadata {key}: {meta.get(key)!r} != {value!r}")
    for p in problems:
        print(p)
    if not problems:
        print(f"ok: {len(want_names)} tensors match")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
