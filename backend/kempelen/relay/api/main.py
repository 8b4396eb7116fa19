"""Wires the resource routers into one APIRouter; nothing else."""

from fastapi import APIRouter

from kempelen.relay.api.routes import (
    answers,
    auth,
    batches,
    events,
    health,
    leases,
    payloads,
    receipts,
    reputation,
    settlements,
    tasks,
    workers,
)

api_router = APIRouter()
for module in (auth, payloads, batches, tasks, leases, answers, receipts, workers, reputation, events,
               settlements, health):
    api_router.include_router(module.router)
