"""The relay: the one public endpoint that pilots and drones meet at.

Module map (each module one job; routes stay thin over the store and dispatcher):

- ``config``   RelayConfig: data dir layout, limits, TTLs, lock-out settings
- ``db``       SQLite connection in WAL mode, schema version and migrations,
               a serialized executor so async code never shares a connection
- ``errors``   ApiError and the handlers that make every error ``{"error","detail"}``
- ``auth``     RE-V1 verification middleware, nonce memory, pilot/drone principals
- ``login``    challenge, TOTP login, lock-out, sessions, logout
- ``enroll``   enrollment (join) tokens and drone registration
- ``tasks``    the task store: submit, list, show, cancel, finish, transitions
- ``dispatch`` the long-poll: heartbeat in, signed tasks/cancels/fetches out
- ``signals``  in-process wake-ups keyed by name (no polling loops)
- ``logs``     append-only output files addressed by offset
- ``blobs``    content-addressed blob store for artifacts and fetches
- ``events``   server-sent events fan-out
- ``sweeper``  housekeeping: purge expired rows, offline drones, lost tasks
- ``app``      ``create_app(config)``; ``server`` the programmatic runner; ``cli`` the click group
"""
