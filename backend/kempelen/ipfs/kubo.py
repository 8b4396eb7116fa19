"""Replication to a Kubo node over its HTTP RPC API (`/api/v0/...`), with plain httpx.

`ipfshttpclient` refuses current Kubo versions, and we need only three calls.
Every add pins the same chunking settings the embedded store uses and checks
Kubo's answer against our CID, so a replica can never silently differ from
what is on-chain. Kubo's RPC is POST-only and must never face the internet.
"""

from __future__ import annotations

import hashlib
import json
from typing import BinaryIO

import httpx

from kempelen.ipfs.errors import CorruptBlock, ReplicationError
from kempelen.ipfs.unixfs import CHUNK_SIZE
from kempelen.protocol.cid import CID


def add_params(cid_version: int) -> dict[str, str]:
    """The `ipfs add` flags under which Kubo computes exactly our CIDs."""
    return {
        "cid-version": str(cid_version),
        "raw-leaves": "true" if cid_version == 1 else "false",
        "chunker": f"size-{CHUNK_SIZE}",
        "hash": "sha2-256",
        "trickle": "false",
        "pin": "true",
        "quieter": "true",
    }


class KuboRPC:
    """A Kubo node reached at `base_url` (default `http://127.0.0.1:5001`)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:5001",
        *,
        client: httpx.Client | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._client = client or httpx.Client(timeout=timeout)
        self._base = base_url.rstrip("/") + "/api/v0"

    def _post(self, command: str, **kwargs) -> httpx.Response:
        try:
            response = self._client.post(f"{self._base}/{command}", **kwargs)
        except httpx.HTTPError as exc:
            raise ReplicationError(f"Kubo RPC {command} failed: {exc}") from None
        if response.status_code != 200:
            raise ReplicationError(f"Kubo RPC {command}: {_kubo_message(response)}")
        return response

    def add(
        self, content: BinaryIO | bytes, *, cid_version: int = 1, expected: CID | None = None
    ) -> CID:
        """`ipfs add` the content (streamed as multipart) and return Kubo's root CID.

        With `expected`, a different answer raises ReplicationError: it would mean
        Kubo chunked differently and the on-chain CID would not resolve there.
        """
        files = {"file": ("payload", content, "application/octet-stream")}
        response = self._post("add", params=add_params(cid_version), files=files)
        lines = [line for line in response.text.splitlines() if line.strip()]
        if not lines:
            raise ReplicationError("Kubo RPC add returned no result")
        try:
            cid = CID.parse(json.loads(lines[-1])["Hash"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ReplicationError(f"Kubo RPC add returned an unreadable result: {exc}") from None
        if expected is not None and cid != expected:
            raise ReplicationError(f"Kubo computed {cid} for content we address as {expected}")
        return cid

    def pin_add(self, cid: CID) -> None:
        """Pin recursively (the node fetches any blocks it lacks)."""
        response = self._post("pin/add", params={"arg": str(cid), "recursive": "true"})
        pins = response.json().get("Pins") or []
        if not any(CID.parse(pin).multihash == cid.multihash for pin in pins):
            raise ReplicationError(f"Kubo did not report {cid} as pinned (got {pins})")

    def block_get(self, cid: CID) -> bytes:
        """One raw block, verified against its CID: the node is not trusted either."""
        block = self._post("block/get", params={"arg": str(cid)}).content
        if hashlib.sha256(block).digest() != cid.digest:
            raise CorruptBlock(f"Kubo returned a block that does not hash to {cid}")
        return block

    def replicate(self, store, cid: CID) -> CID:
        """Add a stored file to Kubo and check Kubo derives the same CID."""
        with store.open(cid) as payload:
            return self.add(payload, cid_version=cid.version, expected=cid)

    def close(self) -> None:
        self._client.close()


def _kubo_message(response: httpx.Response) -> str:
    # Kubo errors are {"Message": ..., "Code": ..., "Type": "error"}.
    try:
        return f"{response.status_code} {response.json()['Message']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} {response.text[:200]}"
