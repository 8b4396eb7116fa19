"""The gateway router: spec headers and statuses in-process, then a real client over HTTP."""

import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from ipfs_helpers import REPO, node_json, overwrite_block, payload
from kempelen.ipfs.car import CarReader
from kempelen.ipfs.gateway import gateway_router
from kempelen.ipfs.store import ContentStore
from kempelen.ipfs.unixfs import CHUNK_SIZE, file_cid

IMMUTABLE = "public, max-age=29030400, immutable"


@pytest.fixture
def store(tmp_path):
    return ContentStore(tmp_path / "store")


@pytest.fixture
def client(store):
    app = FastAPI()
    app.include_router(gateway_router(store))
    return TestClient(app)


def test_file_bytes_by_default(store, client):
    data = payload(2 * CHUNK_SIZE + 10)
    cid = store.put(data)
    response = client.get(f"/ipfs/{cid}")
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["etag"] == f'"{cid}"'
    assert response.headers["x-ipfs-path"] == f"/ipfs/{cid}"
    assert response.headers["cache-control"] == IMMUTABLE


def test_cidv0_is_served_under_its_own_path(store, client):
    cid = store.put(b"task payload", cid_version=0)
    response = client.get(f"/ipfs/{cid}")
    assert response.content == b"task payload"
    assert response.headers["x-ipfs-path"] == f"/ipfs/{cid}"


@pytest.mark.parametrize(
    ("query", "headers"),
    [("?format=raw", {}), ("", {"Accept": "application/vnd.ipld.raw"})],
)
def test_single_raw_block(store, client, query, headers):
    root = store.put(payload(2 * CHUNK_SIZE))
    response = client.get(f"/ipfs/{root}{query}", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.ipld.raw"
    assert response.headers["etag"] == f'"{root}.raw"'
    assert response.headers["cache-control"] == IMMUTABLE
    assert response.headers["x-content-type-options"] == "nosniff"
    assert hashlib.sha256(response.content).digest() == root.digest  # the root block itself


@pytest.mark.parametrize(
    ("query", "headers"),
    [("?format=car", {}), ("", {"Accept": "application/vnd.ipld.car; version=1"})],
)
def test_car_of_the_dag(store, client, query, headers):
    data = payload(3 * CHUNK_SIZE + 1)
    root = store.put(data)
    response = client.get(f"/ipfs/{root}{query}", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/vnd.ipld.car; version=1")
    assert response.headers["cache-control"] == IMMUTABLE
    assert response.headers["x-ipfs-path"] == f"/ipfs/{root}"
    reader = CarReader(io.BytesIO(response.content))
    assert reader.roots == [root]
    assert len(list(reader.blocks())) == 5  # root + 4 leaves, each hash-checked by the reader


def test_head_sends_headers_without_a_body(store, client):
    cid = store.put(b"x" * 1000)
    response = client.head(f"/ipfs/{cid}")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == "1000"
    assert response.headers["etag"] == f'"{cid}"'
    assert client.head(f"/ipfs/{cid}?format=raw").headers["content-length"] == "1000"


def test_if_none_match_gives_304(store, client):
    cid = store.put(b"cached")
    response = client.get(f"/ipfs/{cid}", headers={"If-None-Match": f'"{cid}"'})
    assert response.status_code == 304


def test_malformed_cid_is_400_and_unknown_content_404(client):
    assert client.get("/ipfs/not-a-cid").status_code == 400
    assert (
        client.get("/ipfs/bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku").status_code
        == 404
    )
    unknown = file_cid(payload(3 * CHUNK_SIZE))
    for query in ("", "?format=raw", "?format=car"):
        assert client.get(f"/ipfs/{unknown}{query}").status_code == 404
    assert client.get(f"/ipfs/{unknown}?format=tar").status_code == 400


def test_corrupted_stored_root_is_a_server_error_not_wrong_bytes(store, client):
    cid = store.put(b"label: dog")
    overwrite_block(store.blocks, cid, b"label: cat")
    response = client.get(f"/ipfs/{cid}")
    assert response.status_code == 500
    assert b"label" not in response.content


# -- over real HTTP, checked by an independent client -------------------------------

APP_SOURCE = """
import os, uvicorn
from fastapi import FastAPI
from kempelen.ipfs.gateway import gateway_router
from kempelen.ipfs.store import ContentStore
app = FastAPI()
app.include_router(gateway_router(ContentStore(os.environ["KEMPELEN_STORE"])))
uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served_gateway(store, tmp_path):
    """The router mounted in a FastAPI app under uvicorn on 127.0.0.1; stopped by PID."""
    port = _free_port()
    env = {**os.environ, "KEMPELEN_STORE": str(store.root), "PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-c", APP_SOURCE], env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gateway did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


@pytest.mark.parametrize("version", [1, 0])
def test_uvicorn_gateway_car_verified_by_node_ipld_car_and_unixfs_exporter(
    store, served_gateway, version
):
    # @helia/verified-fetch needs Node >= 22 (this machine has 20), so the verifying client
    # is @ipld/car + ipfs-unixfs-exporter: every block hash-checked, then the file rebuilt.
    data = payload(5 * CHUNK_SIZE + 3, seed=b"served")
    root = store.put(data, version)
    result = node_json("car-read", f"{served_gateway}/ipfs/{root}?format=car")
    assert result["roots"] == [str(root)]
    assert result["contentType"].startswith("application/vnd.ipld.car")
    assert (result["size"], result["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())


def test_uvicorn_gateway_raw_blocks_verified_by_node_trustless_client(store, served_gateway):
    data = payload(2 * CHUNK_SIZE + 7, seed=b"raw-walk")
    root = store.put(data)
    result = node_json("gateway-raw", served_gateway, str(root))
    assert result["blocksFetched"] == 4  # root + 3 leaves, one request each
    assert (result["size"], result["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
