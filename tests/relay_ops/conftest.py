"""A real relay subprocess and a logged-in pilot, from the shared test support."""

from tests.support.relay_fixtures import pilot, relay  # noqa: F401
