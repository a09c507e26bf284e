"""placeholder."""

from relay.context import Relay


async def sweep(relay: Relay) -> None:
    return None
