"""``create_app(config)``: the relay as an ASGI app, for ``serve``, tests and other runners.

Hook points for the parts built elsewhere: ``app.state.relay`` holds the
stores and signals; metrics and systemd code wrap or extend the app returned
here (``relay.metrics.install_for_relay(app)``) without this module knowing them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from dragoon.relay import errors, sweeper
from dragoon.relay import jobs as job_store
from dragoon.relay.auth import SignedRequests
from dragoon.relay.config import RelayConfig
from dragoon.relay.context import Relay
from dragoon.relay.ratelimit import OpenRouteLimits
from dragoon.relay.routes import (
    audit,
    drone_api,
    events,
    fetches,
    fleet,
    health,
    jobs,
    login,
    messages,
    recipients,
    stdin,
    tasks,
)
from fastapi import FastAPI


def create_app(config: RelayConfig) -> FastAPI:
    relay = Relay.open(config)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await relay.db.run(job_store.settle_all)  # what a crash left between two steps
        await relay.start()  # the other replicas, when on PostgreSQL
        task = asyncio.create_task(sweeper.run(relay))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await relay.stop()
            relay.close()

    app = FastAPI(
        title="dragoon relay", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
    )
    app.state.relay = relay
    errors.install(app)
    for module in (login, fleet, drone_api, tasks, jobs, stdin, fetches, messages, events, health,
                   audit, recipients):
        app.include_router(module.router)
    app.add_middleware(SignedRequests, relay=relay)
    app.add_middleware(OpenRouteLimits, relay=relay)  # outside: a 429 costs no body read
    return app
