#!/usr/bin/env bash
# Validates deploy/k8s/*.yaml against the Kubernetes API schemas (kubernetes-validate, from
# PyPI, installed into a throw-away virtual environment) and checks the Dockerfile's
# stages name only binaries the workspace builds. It does not build the image or apply the
# manifests (no Docker daemon or cluster is assumed).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TMPDIR:-/tmp}/fedra-kubernetes-validate"
[ -x "$venv/bin/kubernetes-validate" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q kubernetes-validate; }
"$venv/bin/kubernetes-validate" --strict --kubernetes-version 1.30 deploy/k8s/*.yaml
bins=$(cargo metadata --no-deps --format-version 1 \
    | python3 -c 'import json,sys; print(" ".join(t["name"] for p in json.load(sys.stdin)["packages"] for t in p["targets"] if "bin" in t["kind"]))')
for bin in $(grep -o -- '--bin [a-z-]*' deploy/Dockerfile | awk '{print $2}'); do
    case " $bins " in
        *" $bin "*) ;;
        *) echo "deploy/Dockerfile builds $bin, which no workspace crate defines" >&2; exit 1 ;;
    esac
done
echo "deploy/: manifests valid, Dockerfile binaries defined"
