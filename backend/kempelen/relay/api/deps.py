"""Typed dependencies of the routes: the relay state, a DB session per request, the signed-in address."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from kempelen.relay import repository
from kempelen.relay.errors import NotAuthenticated
from kempelen.relay.models import utcnow
from kempelen.relay.state import RelayState

# Ids as the escrow types them; batch ids stop at 2^63 so every database can hold them.
BatchIdPath = Annotated[int, Path(ge=1, lt=2**63, description="Batch id (uint64, from 1)")]
TaskIndexPath = Annotated[int, Path(ge=0, lt=2**32, description="Task index (uint32, from 0)")]


async def get_state(request: Request) -> RelayState:  # async: no threadpool hop for a lookup
    return request.app.state.relay


StateDep = Annotated[RelayState, Depends(get_state)]


def get_db(state: StateDep) -> Iterator[Session]:
    """A session whose transaction commits when the route returns, and rolls back if it raises."""
    with state.sessions.begin() as session:
        yield session


# scope="function": commit before the response is sent. With FastAPI's default ("request") the
# commit runs after it, so a client could be told of a session, lease or upload that another
# worker process cannot see yet, or that a failed commit then loses.
SessionDep = Annotated[Session, Depends(get_db, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="Session token from POST /auth/login")


def token_hash(secret: str, token: str) -> str:
    """What the sessions table stores: a keyed hash, so a leaked table grants no session."""
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def get_current_address(state: StateDep, db: SessionDep,
                        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    if credentials is None:
        raise NotAuthenticated("sign in first: POST /auth/login, then send 'Authorization: Bearer <token>'")
    hashed = token_hash(state.settings.session_secret.get_secret_value(), credentials.credentials)
    address = repository.session_address(db, hashed, utcnow())
    if address is None:
        raise NotAuthenticated("session token unknown or expired: sign in again")
    return address


CurrentAddress = Annotated[str, Depends(get_current_address)]
