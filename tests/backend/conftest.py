"""Shared fixtures for the package's tests: a real anvil, the deployed protocol, real databases."""

from __future__ import annotations

import os
import uuid

import pytest

from kempelen.chain.anvil import Anvil, dev_keys
from kempelen.chain.contracts import Chain, deploy_protocol

POSTGRES_ADMIN_URL = os.environ.get("KEMPELEN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run long fuzz and load tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="long run: pass --slow (or use make bench-*)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def keys() -> list[str]:
    """Private keys of anvil's ten funded dev accounts; keys[0] deploys."""
    return dev_keys(10)


@pytest.fixture(scope="session")
def anvil(tmp_path_factory):
    """One anvil for the session on a free 127.0.0.1 port, stopped by PID at the end."""
    node = Anvil(log_path=tmp_path_factory.mktemp("anvil") / "anvil.log")
    node.start()
    yield node
    node.stop()


@pytest.fixture(scope="session")
def deployment(anvil, keys, tmp_path_factory):
    """Reputation + TaskEscrow + a 6-decimal test stablecoin, deployed with plain web3.py."""
    deployed = deploy_protocol(anvil.url, keys[0])
    directory = tmp_path_factory.mktemp("deployments")
    deployed.save(directory)
    os.environ["KEMPELEN_DEPLOYMENTS"] = str(directory)
    return deployed


@pytest.fixture(scope="session")
def chain(anvil, deployment) -> Chain:
    return Chain(anvil.url, deployment)


@pytest.fixture
def snapshot(chain):
    """Undo whatever the test did to the shared chain (balances, batches, time travel)."""
    snap = chain.w3.provider.make_request("evm_snapshot", [])["result"]
    yield
    chain.w3.provider.make_request("evm_revert", [snap])


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'kempelen.sqlite'}"


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database, dropped afterwards; skips only if no server is reachable."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    name = f"kempelen_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}/{name}"
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request) -> str:
    """Run a test against both storage backends."""
    return request.getfixturevalue(f"{request.param}_url")
