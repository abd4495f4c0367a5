"""Refusals reach the caller as exceptions carrying their reason: a malformed plan before
anything is sent, the coordinator's own validation message with its gRPC code, another
scientist's run, an address where nothing listens."""

from __future__ import annotations

from pathlib import Path

import pytest

import fedra
from federation import Federation

GOOD = {
    "version": 1,
    "rounds": 1,
    "clients_per_round": 1,
    "min_clients": 1,
    "round_deadline_seconds": 30,
    "model": {"name": "py-refused", "kind": "logistic_regression", "input_dim": 32, "classes": 3},
    "local": {"epochs": 1, "batch_size": 16, "learning_rate": 0.1},
}


def with_(**changes: object) -> dict[str, object]:
    return {**GOOD, **changes}


def test_the_coordinators_validation_message_reaches_the_exception(client: fedra.Client) -> None:
    with pytest.raises(fedra.RefusedError) as refused:
        client.submit(with_(rounds=0))
    assert refused.value.code == "INVALID_ARGUMENT"
    assert "plan.rounds must be in 1..=100000, got 0" in refused.value.message
    assert str(refused.value).endswith("(INVALID_ARGUMENT)")

    even_kernel = with_(model={"name": "py-cnn-bad", "kind": "cnn", "height": 4, "width": 4, "channels": 2,
                               "conv": [{"filters": 3, "kernel": 4}], "dense": [], "classes": 3})
    with pytest.raises(fedra.RefusedError, match=r"plan.model.conv\[0\].kernel: kernel size 4 must be odd"):
        client.submit(even_kernel)


def test_malformed_plans_are_refused_before_sending_naming_the_key(client: fedra.Client, tmp_path: Path) -> None:
    with pytest.raises(fedra.PlanError, match="unknown key local.epoch"):
        client.submit(with_(local={**GOOD["local"], "epoch": 3}))  # type: ignore[dict-item]
    with pytest.raises(fedra.PlanError, match="missing key round_deadline_seconds"):
        client.submit({k: v for k, v in GOOD.items() if k != "round_deadline_seconds"})
    with pytest.raises(fedra.PlanError, match="version 9 is not supported"):
        client.submit(with_(version=9))
    with pytest.raises(fedra.PlanError, match="exactly one of clip_norm"):
        client.submit(with_(privacy={"mechanism": "central", "noise_multiplier": 1.0, "expected_clients": 2}))
    bad = tmp_path / "bad.toml"
    bad.write_text("version = 1\nrounds = = 2\n")
    with pytest.raises(fedra.PlanError, match=r"plan .*bad.toml: .*line 2"):
        client.submit(bad)
    with pytest.raises(fedra.PlanError, match="cannot read plan"):
        client.submit(tmp_path / "missing.toml")


def test_another_scientist_neither_sees_nor_reads_the_run(fed: Federation, client: fedra.Client) -> None:
    plan = with_(model={**GOOD["model"], "name": "py-own"})  # type: ignore[dict-item]
    run = client.submit(plan)
    client.watch(run, progress="none", timeout=300)
    with fedra.connect(fed.address, tls_dir=fed.identity("scientist", "bob")) as bob:
        assert run not in [r.id for r in bob.list_runs()]
        with pytest.raises(fedra.RefusedError, match="was not submitted by fedra://scientist/bob"):
            bob.get_run(run)
    with pytest.raises(fedra.RefusedError, match="already ended") as ended:
        client.cancel(run)
    assert ended.value.code == "FAILED_PRECONDITION"


def test_connecting_needs_an_identity_and_a_listener(
    fed: Federation, alice_tls: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEDRA_TLS_DIR", raising=False)
    with pytest.raises(fedra.FedraError, match="no identity: pass tls_dir"):
        fedra.connect(fed.address, tls_dir=None)
    with pytest.raises(fedra.UnreachableError, match="cannot connect to coordinator at https://127.0.0.1:1"):
        fedra.connect("https://127.0.0.1:1", tls_dir=alice_tls, timeout=1)
    # Of several addresses, the first that answers is used.
    with fedra.connect(f"https://127.0.0.1:1,{fed.address}", tls_dir=alice_tls, timeout=2) as c:
        assert c.address == fed.address
