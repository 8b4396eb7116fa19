"""Builds the relay's FastAPI app: routers, the IPFS gateway, error rendering, body limits, metrics."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from kempelen.chain.contracts import Chain
from kempelen.errors import KempelenError
from kempelen.ipfs.gateway import gateway_router
from kempelen.ipfs.store import ContentStore
from kempelen.relay.api.main import api_router
from kempelen.relay.api.routes.answers import AnswerFastPath
from kempelen.relay.config import Settings
from kempelen.relay.errors import PayloadTooLarge, RelayError
from kempelen.relay.metrics import MetricsMiddleware
from kempelen.relay.state import RelayState

DESCRIPTION = """Kempelen relay: workers post EIP-712 signed answers (acknowledged only once stored),
requesters pin tasks and manifests and read their batches' answers, anyone reads batches, events,
reputation and content (`/ipfs/{cid}`). Sign in with Ethereum (EIP-4361) at `/auth` for a bearer token."""


class BodyLimit:
    """413 before reading a body larger than its route allows (answers are small, uploads larger)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        # base64 grows the answer payload by 4/3; the rest of the JSON is a few hundred bytes.
        self.answer_limit = settings.max_payload_bytes * 4 // 3 + 4096
        self.upload_limit = settings.max_upload_bytes
        self.default_limit = 64 * 1024

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        limit = (self.answer_limit if path.startswith("/answers") else
                 self.upload_limit if path.startswith(("/payloads", "/settlements", "/claims"))
                 else self.default_limit)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return await self._refuse(send, int(value), limit)
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:  # chunked bodies without a length
                raise _TooLarge(received)
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge as exc:
            await self._refuse(send, exc.args[0], limit)

    @staticmethod
    async def _refuse(send: Send, size: int, limit: int) -> None:
        refusal = PayloadTooLarge(f"request body of {size} bytes is over this route's limit of {limit}",
                                  limit=limit)
        response = JSONResponse(refusal.body(), status_code=refusal.status_code)
        await response({"type": "http"}, None, send)


class _TooLarge(Exception):
    pass


async def _relay_error(_request: Request, exc: RelayError) -> JSONResponse:
    headers = {"Retry-After": str(max(1, round(exc.extra["retry_after"])))} if "retry_after" in exc.extra else None
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)


async def _kempelen_error(_request: Request, exc: KempelenError) -> JSONResponse:
    return JSONResponse({"error": "invalid_input", "detail": str(exc)}, status_code=400)


def create_app(settings: Settings | None = None, *, chain: Chain | None = None,
               store: ContentStore | None = None) -> FastAPI:
    """The relay app. `chain` and `store` default to ones built from `settings` at startup."""
    settings = settings or Settings()
    state = RelayState.open(settings, chain=chain, store=store)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        state.start()
        try:
            yield
        finally:
            state.close()

    app = FastAPI(title="Kempelen relay", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.state.relay = state
    app.include_router(api_router)
    app.include_router(gateway_router(state.store))
    app.add_exception_handler(RelayError, _relay_error)
    app.add_exception_handler(KempelenError, _kempelen_error)
    app.add_middleware(AnswerFastPath, state=state)
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    return app


def create_app_from_env() -> FastAPI:
    """uvicorn factory (`--factory kempelen.relay.main:create_app_from_env`): settings from KEMPELEN_*."""
    return create_app(Settings())
