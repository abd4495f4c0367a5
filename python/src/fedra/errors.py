"""The exceptions the package raises. Every message names what was wrong: the plan key,
the coordinator's own refusal (with its gRPC status code), the address that could not be
reached, or the digest that did not match."""

from __future__ import annotations


class FedraError(Exception):
    """Base class of every error this package raises."""


class PlanError(FedraError):
    """A plan file or dict is malformed: unreadable TOML, an unknown or missing key, a value
    of the wrong type. Values themselves are judged by the coordinator at submit time
    (see :class:`RefusedError`)."""


class RefusedError(FedraError):
    """The coordinator refused a request. ``message`` is the coordinator's own text (for an
    invalid plan it names the field, e.g. ``plan.rounds must be in 1..=100000, got 0``) and
    ``code`` the gRPC status code's name (``INVALID_ARGUMENT``, ``PERMISSION_DENIED``, …)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


class UnreachableError(FedraError):
    """No coordinator answered at the given address."""


class UntrustedCheckpointError(FedraError):
    """A checkpoint failed verification (signature, digests, layout), or there is nothing
    to verify its signature against."""


class RunEndedError(FedraError):
    """A watched run ended failed or cancelled. ``run`` is its final state."""

    def __init__(self, run: object, message: str) -> None:
        super().__init__(message)
        self.run = run
