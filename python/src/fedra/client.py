"""The data scientist's connection to a coordinator: submit plans, watch runs, list them,
read their metrics, list and pull checkpoints. It speaks the coordinator's gRPC API
(``RunService`` and ``CheckpointService``) as the ``fedra`` CLI does, as the same identity
(mutual TLS with an identity directory from ``fedra pki issue``), and turns every gRPC
refusal into a :class:`~fedra.errors.RefusedError` carrying the coordinator's message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import grpc

from fedra.checkpoint import TRUST_FILE, Checkpoint, TrustedKeys, verify
from fedra.errors import FedraError, RefusedError, RunEndedError, UnreachableError, UntrustedCheckpointError
from fedra.plan import PlanSource, load_plan
from fedra.progress import Progress
from fedra.runs import Run, metrics_table
from fedra.v1 import fedra_pb2 as pb
from fedra.v1 import fedra_pb2_grpc as rpc

DEFAULT_COORDINATOR = "https://127.0.0.1:7070"
# Checkpoint streams carry the safetensors file in parts; room for large parts.
_MAX_MESSAGE = 64 * 1024 * 1024


@dataclass(frozen=True)
class CheckpointSummary:
    """A checkpoint as ``ListCheckpoints`` reports it (pull it for its tensors)."""

    id: str
    run_id: str
    round: int
    model_name: str
    regions: tuple[str, ...]
    sha256: str
    created_at: str
    published: bool


def _rpc_error(e: grpc.RpcError, address: str) -> FedraError:
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = (e.details() if hasattr(e, "details") else None) or str(e)
    if code == grpc.StatusCode.UNAVAILABLE:
        return UnreachableError(f"coordinator at {address} is unavailable: {details}")
    return RefusedError(code.name, details)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise FedraError(f"{path}: {e.strerror or e}") from None


def _channel(endpoint: str, tls_dir: Path | None, timeout: float) -> grpc.Channel:
    target = endpoint.removeprefix("https://").removeprefix("http://").rstrip("/")
    options = [("grpc.max_receive_message_length", _MAX_MESSAGE), ("grpc.max_send_message_length", _MAX_MESSAGE)]
    if tls_dir is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(tls_dir / "ca.pem"),
            private_key=_read(tls_dir / "key.pem"),
            certificate_chain=_read(tls_dir / "cert.pem"),
        )
        channel = grpc.secure_channel(target, creds, options=options)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        channel.close()
        how = "plain text" if tls_dir is None else f"mutual TLS as {tls_dir}"
        raise UnreachableError(f"cannot connect to coordinator at {endpoint} ({how}) within {timeout:g} s") from None
    return channel


class Client:
    """A connection to one coordinator. Create it with :func:`connect`; close it with
    :meth:`close` or use it as a context manager."""

    def __init__(self, channel: grpc.Channel, address: str, trust: TrustedKeys | None) -> None:
        self._channel = channel
        self.address = address
        self.trust = trust
        self._runs = rpc.RunServiceStub(channel)  # type: ignore[no-untyped-call]
        self._checkpoints = rpc.CheckpointServiceStub(channel)  # type: ignore[no-untyped-call]

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection."""
        self._channel.close()

    def _call(self, method: Any, request: Any, timeout: float | None = 30.0) -> Any:
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as e:
            raise _rpc_error(e, self.address) from None

    def submit(self, plan: PlanSource) -> str:
        """Submits a plan (a TOML file path, a dict shaped like the file, or a ``RunPlan``);
        returns the run id. The coordinator validates the plan now, not at round 5.

        Raises:
            PlanError: the plan is malformed (naming the key), before anything is sent.
            RefusedError: the coordinator refused it; ``INVALID_ARGUMENT`` names the field.
        """
        message = load_plan(plan)
        return str(self._call(self._runs.SubmitRun, pb.SubmitRunRequest(plan=message)).run_id)

    def get_run(self, run_id: str) -> Run:
        """One run with its rounds and evaluations.

        Raises:
            RefusedError: unknown run, or not yours (``NOT_FOUND``, ``PERMISSION_DENIED``).
        """
        return Run.from_pb(self._call(self._runs.GetRun, pb.GetRunRequest(run_id=run_id)))

    def list_runs(self) -> list[Run]:
        """Every run the caller may see (a scientist: their own), oldest first, without
        their rounds (use :meth:`get_run`)."""
        runs: list[Run] = []
        token = ""
        while True:
            page = self._call(self._runs.ListRuns, pb.ListRunsRequest(page_size=1000, page_token=token))
            runs.extend(Run.from_pb(r) for r in page.runs)
            token = page.next_page_token
            if not token:
                return runs

    def events(self, run_id: str, timeout: float | None = None) -> Iterator[pb.RunEvent]:
        """The run's events as they happen: what already happened first, then live events,
        ending after ``run_finished``. ``timeout`` bounds the whole stream (seconds).

        Raises:
            RefusedError: unknown run, or the stream's deadline passed (``DEADLINE_EXCEEDED``).
        """
        stream = self._runs.WatchRun(pb.WatchRunRequest(run_id=run_id), timeout=timeout)
        try:
            yield from stream
        except grpc.RpcError as e:
            raise _rpc_error(e, self.address) from None
        finally:
            stream.cancel()

    def watch(self, run_id: str, progress: str = "bar", timeout: float | None = None, check: bool = True) -> Run:
        """Follows a run until it ends, showing its progress, and returns its final state.

        ``progress``: ``"bar"`` (tqdm when installed, else plain lines), ``"lines"`` or
        ``"none"``. ``timeout`` bounds the watch in seconds.

        Raises:
            RunEndedError: with ``check``, the run ended failed or cancelled.
            RefusedError: unknown run, or ``timeout`` passed first (``DEADLINE_EXCEEDED``).
        """
        run = self.get_run(run_id)
        display = Progress(run_id, run.total_rounds, progress)
        try:
            for event in self.events(run_id, timeout):
                display.event(event)
        finally:
            display.close()
        run = self.get_run(run_id)
        if check and run.state in ("failed", "cancelled"):
            raise RunEndedError(run, f"run {run_id} {run.state}" + (f": {run.failure}" if run.failure else ""))
        return run

    def run(self, plan: PlanSource, progress: str = "bar", timeout: float | None = None) -> Run:
        """Submits a plan and watches the run to its end (:meth:`submit`, then :meth:`watch`)."""
        return self.watch(self.submit(plan), progress=progress, timeout=timeout)

    def cancel(self, run_id: str) -> str:
        """Cancels a queued or running run; returns its state after.

        Raises:
            RefusedError: ``FAILED_PRECONDITION`` when it already ended.
        """
        from fedra.runs import state_name

        return state_name(self._call(self._runs.CancelRun, pb.CancelRunRequest(run_id=run_id)).state)

    def metrics(self, run_id: str) -> Any:
        """Per-round metrics of a run: a ``pandas.DataFrame`` when pandas is installed, else a
        list of dicts (columns in :data:`fedra.runs.METRIC_COLUMNS`)."""
        return metrics_table(self.get_run(run_id))

    def list_checkpoints(
        self, region: str | None = None, model: str | None = None, run_id: str | None = None
    ) -> list[CheckpointSummary]:
        """Checkpoints, optionally filtered by region, model name and run."""
        req = pb.ListCheckpointsRequest(region=region or "", model_name=model or "", run_id=run_id or "")
        return [
            CheckpointSummary(c.checkpoint_id, c.run_id, c.round, c.model_name, tuple(c.regions), c.sha256,
                              c.created_at, c.published)
            for c in self._call(self._checkpoints.ListCheckpoints, req).checkpoints
        ]

    def pull(self, checkpoint_id: str, region: str | None = None, verify_signature: bool = True) -> Checkpoint:
        """Downloads a checkpoint (``region``'s copy; ``None``: the coordinator's choice) and
        verifies it as ``fedra checkpoint pull`` does: the manifest's signature against the
        trusted keys, the file's and the parameters' sha256, the layout. Its tensors come back
        as numpy arrays (:attr:`Checkpoint.tensors`); :meth:`Checkpoint.save` writes the files.

        ``verify_signature=False`` skips only the signature (for a deployment without a trust
        file at hand); the digests are always checked.

        Raises:
            UntrustedCheckpointError: no trusted key (while ``verify_signature``), or the first
                check that failed.
            RefusedError: unknown checkpoint or not readable by the caller.
        """
        if verify_signature and self.trust is None:
            raise UntrustedCheckpointError(
                "no trusted checkpoint signing key to verify against: connect with trust=PATH "
                f"(the deployment's {TRUST_FILE}; an identity directory's is used by default), "
                "or pass verify_signature=False"
            )
        req = pb.FetchCheckpointRequest(checkpoint_id=checkpoint_id, region=region or "")
        stream = self._checkpoints.FetchCheckpoint(req, timeout=600.0)
        info: pb.CheckpointInfo | None = None
        parts: list[bytes] = []
        try:
            for part in stream:
                which = part.WhichOneof("part")
                if info is None:
                    if which != "info":
                        raise UntrustedCheckpointError(f"checkpoint {checkpoint_id}: the stream did not start with its info")
                    info = part.info
                elif which == "safetensors":
                    parts.append(part.safetensors)
                else:
                    raise UntrustedCheckpointError(f"checkpoint {checkpoint_id}: unexpected {which} in the stream")
        except grpc.RpcError as e:
            raise _rpc_error(e, self.address) from None
        finally:
            stream.cancel()
        if info is None:
            raise UntrustedCheckpointError(f"checkpoint {checkpoint_id}: the stream was empty")
        return verify(
            checkpoint_id,
            info.manifest_json.encode(),
            info.signature_json.encode(),
            b"".join(parts),
            self.trust if verify_signature else None,
            info.reference_json.encode(),
        )


def connect(
    address: str | None = None,
    *,
    tls_dir: str | os.PathLike[str] | None = None,
    insecure: bool = False,
    trust: str | os.PathLike[str] | None = None,
    timeout: float = 10.0,
) -> Client:
    """Connects to a coordinator, as the ``fedra`` CLI does.

    Args:
        address: ``https://host:port`` (or several separated by commas: coordinators sharing
            a store, the first that answers is the leader). Default: ``$FEDRA_COORDINATOR``,
            else ``https://127.0.0.1:7070``.
        tls_dir: your identity directory (``ca.pem``, ``cert.pem``, ``key.pem`` from
            ``fedra pki issue``); default ``$FEDRA_TLS_DIR``. The coordinator decides what you
            may do from its certificate.
        insecure: plain text without a certificate (only to an ``--insecure`` coordinator,
            which serves loopback only).
        trust: the trusted checkpoint signing keys (``checkpoint-signing.pub``) that pulls are
            verified against; default: the identity directory's.
        timeout: seconds to wait for each address to accept the connection.

    Raises:
        FedraError: no identity and not ``insecure``, or unreadable identity files.
        UnreachableError: no address accepted the connection.
    """
    address = address or os.environ.get("FEDRA_COORDINATOR") or DEFAULT_COORDINATOR
    tls = tls_dir if tls_dir is not None else os.environ.get("FEDRA_TLS_DIR")
    if insecure:
        directory = None
    elif tls:
        directory = Path(tls)
    else:
        raise FedraError(
            "no identity: pass tls_dir=DIR (or set FEDRA_TLS_DIR) with the certificate from "
            "`fedra pki issue`, or insecure=True for an --insecure coordinator"
        )
    keys = None
    if trust is not None:
        keys = TrustedKeys.load(trust)
    elif directory is not None and (directory / TRUST_FILE).exists():
        keys = TrustedKeys.load(directory / TRUST_FILE)
    failures = []
    for one in (a.strip() for a in address.split(",")):
        try:
            return Client(_channel(one, directory, timeout), one, keys)
        except UnreachableError as e:
            failures.append(str(e))
    raise UnreachableError("; ".join(failures))
