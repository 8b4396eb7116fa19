"""Everything one relay process holds while it runs, built at startup and closed at shutdown."""

from __future__ import annotations

import gc
from dataclasses import dataclass

from sqlalchemy import Engine, event
from sqlalchemy.orm import sessionmaker

from kempelen.chain.contracts import Chain
from kempelen.db import make_engine, make_sessionmaker
from kempelen.ipfs.store import ContentStore
from kempelen.relay.batches import BatchCatalog
from kempelen.relay.config import Settings
from kempelen.relay.intake import AnswerPinner, AnswerWriter, Intake
from kempelen.relay.metrics import Metrics
from kempelen.relay.ratelimit import RateLimiter
from kempelen.relay.settlement import SettlementModes


def relay_engine(url: str) -> Engine:
    """The relay's engine. On SQLite every commit is fsynced (synchronous=FULL): a 202 promises
    the answer survives power loss, and group commit makes that one fsync per group, not per answer."""
    engine = make_engine(url, pool_size=8, max_overflow=8) if not url.startswith("sqlite") else make_engine(url)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _full_sync(dbapi_connection, _record):
            dbapi_connection.execute("PRAGMA synchronous=FULL")
    return engine


@dataclass
class RelayState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker
    chain: Chain
    store: ContentStore
    catalog: BatchCatalog
    intake: Intake
    metrics: Metrics
    pinner: AnswerPinner
    # Lifespans that started this state and have not closed it: a test client and an ASGI test
    # transport may each run the app's lifespan; the writer thread must start and stop once.
    users: int = 0

    @property
    def chain_id(self) -> int:
        return self.chain.chain_id

    @classmethod
    def open(cls, settings: Settings, *, chain: Chain | None = None,
             store: ContentStore | None = None) -> RelayState:
        engine = relay_engine(settings.database_url)
        chain = chain or Chain(settings.rpc_url)
        store = store or ContentStore(settings.store_dir)
        catalog = BatchCatalog(chain, ttl=settings.batch_cache_seconds)
        pinner = AnswerPinner(store)
        writer = AnswerWriter(engine, pinner, window_ms=settings.commit_window_ms,
                              max_answers=settings.commit_max_answers)
        limiter = RateLimiter(settings.answers_per_address_per_s, settings.answers_burst)
        modes = SettlementModes(catalog, store, settings.settlement_margin_seconds)
        intake = Intake(chain.domain, catalog, writer, limiter, settings.max_payload_bytes, modes)
        metrics = Metrics()
        metrics.gauges["kempelen_relay_commit_groups"] = lambda: writer.groups
        metrics.gauges["kempelen_relay_answers_committed"] = lambda: writer.committed
        return cls(settings, engine, make_sessionmaker(engine), chain, store, catalog, intake,
                   metrics, pinner)

    def start(self) -> None:
        self.users += 1
        if self.users > 1:
            return
        # Long-lived objects (app, routes, ABIs) leave the collector's generations and collections
        # run less often: each answer allocates thousands of short-lived objects, and a full
        # collection stalls every request the process holds.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        self.intake.writer.start()
        self.pinner.repin(self.engine)

    def close(self) -> None:
        self.users -= 1
        if self.users > 0:
            return
        self.intake.writer.stop()
        self.pinner.stop()
        self.engine.dispose()
