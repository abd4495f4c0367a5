"""Fixtures: one federation for the session (a coordinator, three sidecars in two regions,
over mutual TLS), a client connected as the scientist alice, and the processes' logs
attached to every failed test's report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import fedra
from federation import CLASSES, DIM, Federation, federation

SIDECARS = [("eu-1", "eu"), ("eu-2", "eu"), ("us-1", "us")]

_federations: list[Federation] = []


@pytest.fixture(scope="session")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    f = federation(tmp_path_factory.mktemp("federation"), SIDECARS, DIM, CLASSES)
    _federations.append(f)
    yield f
    f.stop()


@pytest.fixture(scope="session")
def alice_tls(fed: Federation) -> Path:
    return fed.identity("scientist", "alice")


@pytest.fixture()
def client(fed: Federation, alice_tls: Path) -> Iterator[fedra.Client]:
    with fedra.connect(fed.address, tls_dir=alice_tls) as c:
        yield c


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for f in _federations:
            report.sections.append(("fedra processes", f.logs()))
