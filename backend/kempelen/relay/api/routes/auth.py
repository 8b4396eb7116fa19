"""Sign-In with Ethereum: a one-time nonce, then a signed EIP-4361 message buys a session token."""

from __future__ import annotations

import secrets
from datetime import timedelta

from fastapi import APIRouter
from pydantic import BaseModel, Field

from kempelen.relay import repository, siwe
from kempelen.relay.api.deps import CurrentAddress, SessionDep, StateDep, token_hash
from kempelen.relay.errors import LoginRefused
from kempelen.relay.models import utcnow
from kempelen.relay.schemas import Address, error_responses

router = APIRouter(prefix="/auth", tags=["auth"])


class NonceOut(BaseModel):
    nonce: str
    domain: str = Field(description="the domain the SIWE message must name")
    chain_id: int
    expires_in: int


class Login(BaseModel):
    message: str = Field(max_length=4096, description="the EIP-4361 message text the wallet signed")
    signature: str = Field(pattern=r"^0x([0-9a-fA-F]{128}|[0-9a-fA-F]{130})$")


class SessionOut(BaseModel):
    token: str
    address: Address
    expires_at: str


@router.post("/nonce", response_model=NonceOut)
def issue_nonce(state: StateDep, db: SessionDep) -> NonceOut:
    """A fresh nonce to put in the SIWE message; valid once, for a few minutes."""
    nonce = secrets.token_hex(16)
    now = utcnow()
    repository.purge_nonces(db, now - timedelta(seconds=state.settings.siwe_nonce_seconds))
    repository.add_nonce(db, nonce, now)
    return NonceOut(nonce=nonce, domain=state.settings.siwe_domain, chain_id=state.chain_id,
                    expires_in=state.settings.siwe_nonce_seconds)


@router.post("/login", response_model=SessionOut, responses=error_responses(401))
def login(body: Login, state: StateDep, db: SessionDep) -> SessionOut:
    """Check the message (domain, chain, times), its signature, and spend its nonce."""
    now = utcnow()
    message = siwe.parse(body.message)
    siwe.check(message, domain=state.settings.siwe_domain, chain_id=state.chain_id, now=now)
    signer = siwe.signer(body.message, bytes.fromhex(body.signature[2:]))
    if signer != message.address:
        raise LoginRefused(f"SIWE message names {message.address} but was signed by {signer}")
    issued_after = now - timedelta(seconds=state.settings.siwe_nonce_seconds)
    if not repository.consume_nonce(db, message.nonce, issued_after):
        raise LoginRefused("SIWE nonce unknown, expired or already used: ask POST /auth/nonce for a new one")
    token = secrets.token_urlsafe(32)
    expires = now + timedelta(seconds=state.settings.session_seconds)
    if message.expiration_time is not None:
        expires = min(expires, message.expiration_time)
    repository.add_session(db, token_hash(state.settings.session_secret.get_secret_value(), token),
                           signer, expires)
    return SessionOut(token=token, address=signer, expires_at=expires.isoformat())


@router.post("/logout", status_code=204, responses=error_responses(401))
def logout(address: CurrentAddress, state: StateDep, db: SessionDep) -> None:
    """End every session of the signed-in address."""
    repository.delete_sessions_of(db, address)
