"""``python -m fedra plan [--binary] PLAN.toml``: the ``RunPlan`` this package would submit
for a plan file, as protobuf text, or with ``--binary`` as its serialized bytes on stdout
(what the integration test compares with the ``fedra`` CLI's). Exits 64 on a bad plan, as
``fedra run submit`` does."""

from __future__ import annotations

import sys

from fedra.errors import PlanError
from fedra.plan import load_plan


def main(args: list[str]) -> int:
    binary = "--binary" in args
    rest = [a for a in args if a != "--binary"]
    if len(rest) != 2 or rest[0] != "plan":
        print("usage: python -m fedra plan [--binary] PLAN.toml", file=sys.stderr)
        return 64
    try:
        message = load_plan(rest[1])
    except PlanError as e:
        print(f"fedra: {e}", file=sys.stderr)
        return 64
    if binary:
        sys.stdout.buffer.write(message.SerializeToString(deterministic=True))
    else:
        sys.stdout.write(str(message))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
