"""An ``--insecure`` coordinator (plain text, loopback only): connecting without an
identity, its refusals, and pulls that refuse to go unverified."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import fedra
from federation import Process, start


@pytest.fixture(scope="module")
def insecure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, str]]:
    root = tmp_path_factory.mktemp("insecure")
    p = start("fedra-coordinator", ["--insecure", "--listen", "127.0.0.1:0", "--data-dir", str(root / "data")],
              root / "coordinator.log", root)
    try:
        yield p, "http://" + p.wait_log(r"coordinator serving.*?addr=(\S+)").group(1)
    finally:
        p.stop()


def test_plain_text_connection_lists_and_refuses(insecure: tuple[Process, str]) -> None:
    _, address = insecure
    with fedra.connect(address, insecure=True) as client:
        assert client.list_runs() == []
        assert client.list_checkpoints() == []
        with pytest.raises(fedra.RefusedError, match="plan.clients_per_round") as refused:
            client.submit({
                "version": 1, "rounds": 1, "clients_per_round": 0, "min_clients": 1, "round_deadline_seconds": 5,
                "model": {"name": "x", "kind": "logistic_regression", "input_dim": 2, "classes": 2},
                "local": {"epochs": 1, "batch_size": 1, "learning_rate": 0.1},
            })
        assert refused.value.code == "INVALID_ARGUMENT"
        with pytest.raises(fedra.RefusedError) as unknown:
            client.get_run("run-nope")
        assert unknown.value.code == "NOT_FOUND", unknown.value
        # No identity directory, so no trusted key: a pull refuses before fetching anything.
        with pytest.raises(fedra.UntrustedCheckpointError, match="no trusted checkpoint signing key"):
            client.pull("run-nope.r0001")


def test_the_insecure_coordinators_own_key_can_be_trusted(insecure: tuple[Process, str]) -> None:
    process, address = insecure
    trust = Path(process.log).parent / "data" / "checkpoint-signing.pub"
    with fedra.connect(address, insecure=True, trust=trust) as client:
        assert client.trust is not None and len(client.trust.keys) == 1
        with pytest.raises(fedra.RefusedError) as unknown:
            client.pull("run-nope.r0001")
        assert unknown.value.code == "NOT_FOUND", unknown.value
