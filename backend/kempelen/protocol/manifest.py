"""The batch manifest: the content-addressed document a batch's on-chain manifest CID names.

It lists every task payload's CID (index = the task index workers sign), the instructions,
and how long a worker's lease on a task lasts. Serialized as canonical JSON (sorted keys, no
spaces, UTF-8) so the same manifest always has the same bytes, hence the same CID.

A batch paid by requester-signed settlements (docs/settlement.md) says so with
`"settlement": {"fallbackAt": <unix time>}`: relays hold its answers off-chain until then, and
put the ones no settlement paid on the direct path after it. Manifests without the field are
the same bytes (and CID) as before it existed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from kempelen.errors import KempelenError
from kempelen.protocol.cid import CID

FORMAT = "kempelen/batch-manifest/1"


class ManifestError(KempelenError):
    """A manifest that does not parse or breaks the format's rules."""


def canonical_json(value: object) -> bytes:
    """Deterministic JSON bytes: sorted keys, compact separators, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class BatchManifest:
    title: str
    task_cids: tuple[str, ...]
    instructions: str = ""
    assignment_seconds: int = 600
    answer_schema: dict | None = None  # JSON Schema an answer must satisfy, if any
    labels: tuple[str, ...] = field(default=())  # allowed labels for classification tasks
    # Settlement mode: unix time (chain clock) after which unsettled answers go the direct path.
    settlement_fallback_at: int | None = None

    def __post_init__(self) -> None:
        if not self.task_cids:
            raise ManifestError("a batch manifest needs at least one task")
        for cid in self.task_cids:
            CID.parse(cid)  # raises InvalidCID with a clear message
        if self.assignment_seconds <= 0:
            raise ManifestError("assignment_seconds must be positive")
        fallback = self.settlement_fallback_at
        if fallback is not None and (not isinstance(fallback, int) or isinstance(fallback, bool)
                                     or not 0 < fallback < 2**64):
            raise ManifestError(f"settlement fallbackAt must be a positive unix time, not {fallback!r}")

    @property
    def task_count(self) -> int:
        return len(self.task_cids)

    def to_json(self) -> bytes:
        document = {
            "format": FORMAT,
            "title": self.title,
            "instructions": self.instructions,
            "assignment_seconds": self.assignment_seconds,
            "tasks": [{"index": i, "cid": cid} for i, cid in enumerate(self.task_cids)],
        }
        if self.answer_schema is not None:
            document["answer_schema"] = self.answer_schema
        if self.labels:
            document["labels"] = list(self.labels)
        if self.settlement_fallback_at is not None:
            document["settlement"] = {"fallbackAt": self.settlement_fallback_at}
        return canonical_json(document)

    @classmethod
    def from_json(cls, data: bytes | str) -> BatchManifest:
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"manifest is not JSON: {exc}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ManifestError(f"not a Kempelen batch manifest (format must be {FORMAT!r})")
        try:
            tasks = sorted(document["tasks"], key=lambda task: task["index"])
            if [task["index"] for task in tasks] != list(range(len(tasks))):
                raise ManifestError("task indexes must be 0..n-1 without gaps")
            return cls(
                title=str(document.get("title", "")),
                task_cids=tuple(str(task["cid"]) for task in tasks),
                instructions=str(document.get("instructions", "")),
                assignment_seconds=int(document.get("assignment_seconds", 600)),
                answer_schema=document.get("answer_schema"),
                labels=tuple(document.get("labels", ())),
                settlement_fallback_at=_fallback_at(document.get("settlement")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"malformed manifest: {exc!r}") from None


def _fallback_at(settlement: object) -> int | None:
    if settlement is None:
        return None
    if not isinstance(settlement, dict) or set(settlement) != {"fallbackAt"}:
        raise ManifestError('settlement must be {"fallbackAt": <unix time>}')
    return settlement["fallbackAt"]  # checked in __post_init__
