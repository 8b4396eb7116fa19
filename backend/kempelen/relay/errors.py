"""Errors the relay API answers with: each carries its HTTP status and a stable code."""

from __future__ import annotations

from kempelen.errors import KempelenError


class RelayError(KempelenError):
    """An error a client caused or must know about; rendered as {"error", "detail", ...}."""

    status_code = 400
    code = "bad_request"

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def body(self) -> dict:
        return {"error": self.code, "detail": self.detail, **self.extra}


class BadSignature(RelayError):
    """The signature is malformed or recovers to no key."""

    code = "bad_signature"


class DigestMismatch(RelayError):
    """The answer_digest sent does not hash the payload sent."""

    code = "digest_mismatch"


class SignerMismatch(RelayError):
    """A well-formed signature made by someone other than the claimed address."""

    status_code = 401
    code = "signer_mismatch"


class NotAuthenticated(RelayError):
    status_code = 401
    code = "not_authenticated"


class LoginRefused(RelayError):
    """A Sign-In with Ethereum message or signature that does not grant a session."""

    status_code = 401
    code = "login_refused"


class Forbidden(RelayError):
    status_code = 403
    code = "forbidden"


class UnknownBatch(RelayError):
    status_code = 404
    code = "unknown_batch"


class UnknownTask(RelayError):
    status_code = 404
    code = "unknown_task"


class NotFound(RelayError):
    status_code = 404
    code = "not_found"


class DuplicateAnswer(RelayError):
    """This worker already answered this task here; `receipt` is the original."""

    status_code = 409
    code = "duplicate_answer"


class Conflict(RelayError):
    status_code = 409
    code = "conflict"


class BatchClosed(RelayError):
    """The batch's deadline passed: the escrow would skip the answer."""

    status_code = 410
    code = "batch_closed"


class PayloadTooLarge(RelayError):
    status_code = 413
    code = "payload_too_large"


class InvalidContent(RelayError):
    status_code = 422
    code = "invalid_content"


class RateLimited(RelayError):
    status_code = 429
    code = "rate_limited"


class ChainUnavailable(RelayError):
    status_code = 503
    code = "chain_unavailable"
