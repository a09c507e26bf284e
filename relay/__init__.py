"""The relay: the one public endpoint that pilots and drones meet at.

Module map (each module one job; routes stay thin over the store and dispatcher):

- ``config``    RelayConfig: data dir layout, limits, TTLs, lock-out settings (relay.toml)
- ``db``        SQLite in WAL mode, schema version and migrations, one serialized
                executor thread so async code never shares a connection
- ``context``   the running relay's shared state (config, db, stores, signals, bus, key)
- ``errors``    ApiError and the handlers that make every error ``{"error","detail"}``
- ``auth``      RE-V1 verification middleware, pilot/drone principals
- ``replay``    one-shot nonces in memory, and the durable replay floor that covers a restart
- ``login``     challenge, TOTP login, lock-out, sessions, logout, add-operator
- ``enroll``    enrollment (join) tokens, stored hashed, and drone registration
- ``models``    request bodies (pydantic), the OpenAPI document's source
- ``tasks``     the task store (``TaskStore``, made once with the output store): submit, list,
                show, cancel, finish
- ``dispatch``  the long-poll: heartbeat in, signed tasks/cancels/fetches out; lost/offline sweep
- ``signals``   in-process wake-ups keyed by name (no polling loops)
- ``output``    task output: append-only files addressed by offset, fsynced before acknowledging
- ``blobs``     content-addressed blob store; ``artifacts`` the per-task index over it
- ``fetches``   files a pilot asked a drone for; ``messages`` the inbox; ``audit`` the trail
- ``fleet``     every drone's record and view (state, labels, load), drain
- ``events``    server-sent events: stored (durable ids), replayed, fanned out; ``sweeper`` timed
                housekeeping (purges, event pruning)
- ``logconf``   the relay's own key=value log lines, without secrets
- ``routes/``   HTTP routes, one module per area, named for who calls them: ``drone_api``
                (``/v1/worker``, the drone's), ``fleet`` (``/v1/workers``, the pilots' view of
                drones), ``tasks``, ``fetches``, ``messages``, ``events``, ``login``
                (``/v1/auth``), ``audit``, ``health``; ``downloads`` is the blob answer they share
- ``app``       ``create_app(config)``; ``server`` the programmatic runner; ``cli`` the click group
- ``metrics/``  Prometheus via prometheus-client (request timing, store gauges, ``/metrics``);
                ``systemd`` sd_notify; both plugged in by ``server``
"""
