"""`kempelen ipfs add|cat|export-car|import-car` through Typer's CliRunner."""

import pytest
from ipfs_helpers import overwrite_block, payload
from kempelen.ipfs.blockstore import FileBlockstore
from kempelen.ipfs.cli import app
from kempelen.ipfs.unixfs import CHUNK_SIZE
from kempelen.protocol.cid import CID
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture
def store_args(tmp_path):
    return ["--store", str(tmp_path / "store")]


def test_add_then_cat(tmp_path, store_args):
    path = tmp_path / "task.json"
    path.write_bytes(b"hello")
    added = runner.invoke(app, ["add", str(path), *store_args])
    assert added.exit_code == 0, added.output
    assert added.stdout.strip() == "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"
    shown = runner.invoke(app, ["cat", added.stdout.strip(), *store_args])
    assert shown.exit_code == 0
    assert shown.stdout_bytes == b"hello"


def test_add_cid_version_0(tmp_path, store_args):
    path = tmp_path / "task.json"
    path.write_bytes(b"hello")
    added = runner.invoke(app, ["add", str(path), "--cid-version", "0", *store_args])
    assert added.stdout.strip() == "QmWfVY9y3xjsixTgbd9AorQxH7VtMpzfx2HaWtsoUYecaX"


def test_store_defaults_to_kempelen_store_env(tmp_path, monkeypatch):
    monkeypatch.setenv("KEMPELEN_STORE", str(tmp_path / "env-store"))
    path = tmp_path / "f"
    path.write_bytes(payload(CHUNK_SIZE + 1))
    cid = runner.invoke(app, ["add", str(path)]).stdout.strip()
    assert (tmp_path / "env-store" / "blocks").is_dir()
    assert runner.invoke(app, ["cat", cid]).stdout_bytes == path.read_bytes()


def test_export_and_import_car(tmp_path, store_args):
    path = tmp_path / "f"
    path.write_bytes(payload(2 * CHUNK_SIZE + 1))
    cid = runner.invoke(app, ["add", str(path), *store_args]).stdout.strip()
    car = tmp_path / "f.car"
    assert runner.invoke(app, ["export-car", cid, str(car), *store_args]).exit_code == 0
    other = ["--store", str(tmp_path / "other")]
    imported = runner.invoke(app, ["import-car", str(car), *other])
    assert imported.exit_code == 0 and imported.stdout.strip() == cid
    assert runner.invoke(app, ["cat", cid, *other]).stdout_bytes == path.read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "/nonexistent/file"], "no such file"),
        (["cat", "not-a-cid"], "malformed CID"),
        (["cat", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"], "no content"),
        (["export-car", "Qmnope", "/tmp/x.car"], "malformed CID"),
        (["import-car", "/nonexistent.car"], "no such file"),
    ],
)
def test_errors_are_one_line_with_nonzero_exit(store_args, args, message):
    result = runner.invoke(app, [*args, *store_args])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_corrupted_store_is_reported_not_dumped(tmp_path, store_args):
    path = tmp_path / "f"
    path.write_bytes(b"label: cat")
    cid = runner.invoke(app, ["add", str(path), *store_args]).stdout.strip()
    overwrite_block(FileBlockstore(tmp_path / "store"), CID.parse(cid), b"label: dog")
    result = runner.invoke(app, ["cat", cid, *store_args])
    assert result.exit_code == 1
    assert "corrupted" in result.stderr
    assert result.stdout_bytes == b""
