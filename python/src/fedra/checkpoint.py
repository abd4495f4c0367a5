"""Checkpoints as numpy arrays, verified the way ``fedra checkpoint pull`` and the inference
node verify them (``pki/src/checkpoint.rs``): the manifest's Ed25519 signature against the
deployment's trusted keys (``checkpoint-signing.pub``), then the safetensors file's sha256
(``file_sha256``), the tensors' layout against the manifest's model, and the sha256 of the
tensors' bytes in layout order (``weights_sha256``). Nothing is returned from a checkpoint
that fails any of these; the error names the first mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedra.errors import UntrustedCheckpointError
from fedra.model import Architecture, architecture_from_json, layout

TRUST_FILE = "checkpoint-signing.pub"
SIGNATURE_FORMAT = "fedra.signature.v1"
MANIFEST_FORMAT = "fedra.checkpoint.v1"


@dataclass(frozen=True)
class TrustedKeys:
    """The Ed25519 public keys manifests may be signed with, by key id."""

    keys: dict[str, bytes]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrustedKeys:
        """Reads a trust file: ``ed25519 <64 hex digits>`` per line, ``#`` comments.

        Raises:
            UntrustedCheckpointError: unreadable, or a line that is not a key (named by line).
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise UntrustedCheckpointError(f"cannot read trusted keys {path}: {e.strerror or e}") from None
        keys: dict[str, bytes] = {}
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            try:
                raw = bytes.fromhex(parts[1]) if len(parts) == 2 and parts[0] == "ed25519" else b""
            except ValueError:
                raw = b""
            if len(raw) != 32:
                raise UntrustedCheckpointError(f"{path}:{n}: expected `ed25519 <64 hex digits>`")
            keys[hashlib.sha256(raw).hexdigest()[:16]] = raw
        if not keys:
            raise UntrustedCheckpointError(f"{path}: no `ed25519 <hex>` key line")
        return cls(keys)

    def verify(self, manifest: bytes, signature_json: bytes) -> str:
        """Checks a ``manifest.sig`` over the manifest's exact bytes; returns the key id.

        Raises:
            UntrustedCheckpointError: malformed, unknown key, or a signature that does not match.
        """
        try:
            from cryptography.exceptions import InvalidSignature
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        except ImportError:
            raise UntrustedCheckpointError(
                "verifying checkpoint signatures needs the `cryptography` package "
                "(pip install 'fedra[signatures]'), or pass verify_signature=False"
            ) from None
        try:
            sig = json.loads(signature_json)
            ok = sig["format"] == SIGNATURE_FORMAT and sig["algorithm"] == "ed25519"
            key_id, signature = str(sig["key_id"]), bytes.fromhex(sig["signature"])
        except (ValueError, KeyError, TypeError) as e:
            raise UntrustedCheckpointError(f"the signature is not valid JSON of format {SIGNATURE_FORMAT}: {e!r}") from None
        if not ok:
            raise UntrustedCheckpointError(f"signature format {sig['format']} algorithm {sig['algorithm']}")
        public = self.keys.get(key_id)
        if public is None:
            raise UntrustedCheckpointError(f"signed by key {key_id}, which is not in the trusted keys")
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(signature, manifest)
        except InvalidSignature:
            raise UntrustedCheckpointError(f"the signature by key {key_id} does not match the manifest's bytes") from None
        return key_id


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: its manifest, architecture and tensors (float32 numpy arrays,
    by name, in the layout's order, shapes as :mod:`fedra.model` documents them)."""

    id: str
    run_id: str
    round: int
    model_name: str
    architecture: Architecture
    tensors: dict[str, np.ndarray]
    manifest: dict[str, Any]
    manifest_bytes: bytes = field(repr=False)
    signature_bytes: bytes = field(repr=False)
    weights_bytes: bytes = field(repr=False)
    signed_by: str | None
    """The trusted key id that signed the manifest; ``None`` when the signature was not
    checked (``verify_signature=False``)."""

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Writes ``model.safetensors``, ``manifest.json`` and ``manifest.sig`` into
        ``directory`` (the files ``fedra checkpoint pull`` writes); returns the weights' path."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for name, data in (
            ("model.safetensors", self.weights_bytes),
            ("manifest.json", self.manifest_bytes),
            ("manifest.sig", self.signature_bytes),
        ):
            part = out / (name + ".part")
            part.write_bytes(data)
            part.replace(out / name)
        return out / "model.safetensors"


def verify(
    expected: str,
    manifest: bytes,
    signature: bytes,
    weights: bytes,
    trust: TrustedKeys | None,
    reference_json: bytes = b"",
) -> Checkpoint:
    """Verifies one checkpoint's files and decodes its tensors.

    ``expected`` is the checkpoint id asked for: a valid manifest of another checkpoint is
    refused too. ``trust=None`` skips the signature (digests are still checked).

    Raises:
        UntrustedCheckpointError: the first thing found wrong, naming the checkpoint.
    """

    def bad(message: str) -> UntrustedCheckpointError:
        return UntrustedCheckpointError(f"checkpoint {expected}: {message}")

    signed_by = None
    if trust is not None:
        try:
            signed_by = trust.verify(manifest, signature)
        except UntrustedCheckpointError as e:
            raise bad(f"manifest signature: {e}") from None
    try:
        m = json.loads(manifest)
        model = m["model"]
        architecture = architecture_from_json(model["architecture"], f"checkpoint {expected}")
        fmt, cid, file_sha, weights_sha = m["format"], m["checkpoint_id"], m["file_sha256"], m["weights_sha256"]
    except (ValueError, KeyError, TypeError) as e:
        raise bad(f"the manifest is not a {MANIFEST_FORMAT} manifest: {e!r}") from None
    if fmt != MANIFEST_FORMAT:
        raise bad(f"the manifest is not a {MANIFEST_FORMAT} manifest: format {fmt}")
    if cid != expected:
        raise bad(f"the manifest describes checkpoint {cid}")
    want = layout(architecture)
    recorded = [(t["name"], tuple(t["shape"])) for t in m.get("layout", {}).get("tensors", [])]
    if recorded != want:
        raise bad("the weights file does not match the manifest's layout: the layout differs from the model's")
    computed = hashlib.sha256(weights).hexdigest()
    if computed != str(file_sha).lower():
        raise bad(f"weights file sha256 {computed} differs from the manifest's {file_sha}")
    from safetensors.numpy import load as load_safetensors

    try:
        tensors = load_safetensors(weights)
    except Exception as e:  # safetensors raises its own SafetensorError
        raise bad(f"the weights file is not safetensors: {e}") from None
    if len(tensors) != len(want):
        raise bad(f"the weights file has {len(tensors)} tensors, expected {len(want)}")
    digest = hashlib.sha256()
    ordered: dict[str, np.ndarray] = {}
    for name, shape in want:
        t = tensors.get(name)
        if t is None:
            raise bad(f"tensor {name!r} is missing")
        if t.dtype != np.float32 or tuple(t.shape) != shape:
            raise bad(f"tensor {name!r} is {t.dtype}{list(t.shape)}, expected float32{list(shape)}")
        t = np.ascontiguousarray(t, dtype="<f4")
        digest.update(t.tobytes())
        ordered[name] = t
    if digest.hexdigest() != str(weights_sha).lower():
        raise bad(f"parameters sha256 {digest.hexdigest()} differs from the manifest's {weights_sha}")
    if reference_json:
        ref = hashlib.sha256(reference_json).hexdigest()
        if ref not in {str(v).lower() for v in (m.get("reference_sha256") or {}).values()}:
            raise bad(f"drift reference sha256 {ref} is not one its manifest names")
    return Checkpoint(
        id=cid,
        run_id=str(m.get("run_id", "")),
        round=int(m.get("round", 0)),
        model_name=str(model.get("name", "")),
        architecture=architecture,
        tensors=ordered,
        manifest=m,
        manifest_bytes=manifest,
        signature_bytes=signature,
        weights_bytes=weights,
        signed_by=signed_by,
    )


def open_checkpoint(
    directory: str | os.PathLike[str],
    trust: str | os.PathLike[str] | TrustedKeys | None = None,
    verify_signature: bool = True,
) -> Checkpoint:
    """Opens a checkpoint directory (``model.safetensors``, ``manifest.json``,
    ``manifest.sig``: what ``fedra checkpoint pull`` and :meth:`Checkpoint.save` write) and
    verifies it like a pull.

    Raises:
        UntrustedCheckpointError: a missing file, no trusted key while ``verify_signature``,
            or a failed check.
    """
    d = Path(directory)
    try:
        manifest = (d / "manifest.json").read_bytes()
        signature = (d / "manifest.sig").read_bytes()
        weights = (d / "model.safetensors").read_bytes()
    except OSError as e:
        raise UntrustedCheckpointError(f"{e.filename}: {e.strerror}") from None
    keys = None
    if verify_signature:
        if trust is None:
            raise UntrustedCheckpointError(
                "no trusted checkpoint signing key: pass trust=PATH (the deployment's checkpoint-signing.pub)"
            )
        keys = trust if isinstance(trust, TrustedKeys) else TrustedKeys.load(trust)
    try:
        expected = str(json.loads(manifest)["checkpoint_id"])
    except (ValueError, KeyError, TypeError) as e:
        raise UntrustedCheckpointError(f"{d / 'manifest.json'}: not a {MANIFEST_FORMAT} manifest: {e!r}") from None
    return verify(expected, manifest, signature, weights, keys)
