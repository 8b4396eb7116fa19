"""The independent auditor: replays an escrow's history from JSON-RPC and content hashes alone.

It never imports the relay or the indexer and never reads their databases: every
fact it uses is an event, a calldata byte, a state read at the audited block, or a
block whose bytes hash to the CID that names it. Entry point: `run_audit`.
"""

from kempelen.audit.model import AuditError, AuditReport, Finding
from kempelen.audit.runner import run_audit

__all__ = ["AuditError", "AuditReport", "Finding", "run_audit"]
