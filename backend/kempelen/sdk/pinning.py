"""Where the SDK pins content: straight into a local store, or through a relay's upload API."""

from __future__ import annotations

from typing import Protocol

from kempelen.ipfs.store import ContentStore
from kempelen.protocol.cid import CID
from kempelen.sdk.relay_client import RelayClient


class Pinner(Protocol):
    def pin(self, payload: bytes, kind: str = "task") -> CID:
        """Store `payload`; kind is task, manifest or reason (relays check manifests)."""

    def fetch(self, cid: str | CID) -> bytes: ...


class StorePinner:
    """Pins into an embedded content store (the relay's, when on the same machine)."""

    def __init__(self, store: ContentStore):
        self.store = store

    def pin(self, payload: bytes, kind: str = "task") -> CID:
        return self.store.put(payload)

    def fetch(self, cid: str | CID) -> bytes:
        return self.store.get(cid)  # every block verified against its CID


class RelayPinner:
    """Pins through a relay's upload API (signed in as the requester); fetches verify every block."""

    def __init__(self, client: RelayClient):
        self.client = client

    def pin(self, payload: bytes, kind: str = "task") -> CID:
        return self.client.upload(payload, kind)

    def fetch(self, cid: str | CID) -> bytes:
        return self.client.fetch(str(cid))
