"""`kempelen audit` refuses bad input with one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import pytest
from kempelen.audit.cli import app
from kempelen.chain.anvil import free_port
from kempelen.ipfs.store import ContentStore
from typer.testing import CliRunner

NOBODY = "0x000000000000000000000000000000000000dEaD"


@pytest.fixture
def store_dir(tmp_path):
    return str(ContentStore(tmp_path / "store").root)


def run(*args: str):
    return CliRunner().invoke(app, [*args, "--quiet"])


def assert_one_line_error(result, *fragments: str):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "audit failed:" in result.output
    for fragment in fragments:
        assert fragment in result.output


def test_unreachable_rpc(store_dir):
    url = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(run("--rpc", url, "--escrow", NOBODY, "--content", store_dir), "cannot reach", url)


def test_bad_escrow_address(anvil, store_dir):
    assert_one_line_error(run("--rpc", anvil.url, "--escrow", "0x1234", "--content", store_dir),
                          "not an Ethereum address")


def test_no_contract_at_the_address(anvil, store_dir):
    assert_one_line_error(run("--rpc", anvil.url, "--escrow", NOBODY, "--content", store_dir), "no contract at")


def test_missing_content_directory(anvil, tmp_path):
    missing = tmp_path / "nowhere"
    assert_one_line_error(run("--rpc", anvil.url, "--escrow", NOBODY, "--content", str(missing)),
                          "not a Kempelen content store")
    assert not missing.exists()  # the auditor reads; it never creates a store


def test_exactly_one_content_source(anvil, store_dir):
    assert_one_line_error(run("--rpc", anvil.url, "--escrow", NOBODY), "exactly one content source")
    assert_one_line_error(run("--rpc", anvil.url, "--escrow", NOBODY, "--content", store_dir,
                              "--gateway", "http://127.0.0.1:1"), "exactly one content source")


def test_block_range_beyond_the_head(anvil, deployment, store_dir):
    result = run("--rpc", anvil.url, "--escrow", deployment.escrow, "--content", store_dir,
                 "--to-block", "999999999")
    assert_one_line_error(result, "outside")
