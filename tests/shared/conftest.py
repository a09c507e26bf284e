"""Session-wide keys, a real ssh-agent and the JSON vectors for the shared/ tests.

Keys are made once per session by ssh-keygen (RSA generation is the slow
part of the whole suite); tests treat them as read-only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dragoon.shared.keys import PublicKey, load_public_key_file

from tests.support.agent import SshAgent, running_ssh_agent
from tests.support.keys import ACCEPTED_KINDS, KeyMaker

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def load_vectors(name: str) -> list[dict[str, Any]]:
    """One fixtures/*.json file: a list of test vectors."""
    data = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    assert isinstance(data, list) and data
    return data


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyMaker:
    return KeyMaker(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session", params=ACCEPTED_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """Each key kind dragoon accepts: ed25519, RSA-3072, ECDSA P-256/384/521."""
    return str(request.param)


@pytest.fixture(scope="session")
def key_path(keys: KeyMaker, kind: str) -> Path:
    return keys.make(kind)


@pytest.fixture(scope="session")
def public_key(key_path: Path) -> PublicKey:
    return load_public_key_file(f"{key_path}.pub")


@pytest.fixture(scope="session")
def agent(keys: KeyMaker) -> Iterator[SshAgent]:
    """One real ssh-agent for the session, holding every accepted kind of key."""
    with running_ssh_agent() as running:
        for name in ACCEPTED_KINDS:
            running.add(keys.make(name))
        yield running


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Scratch space for signature and allowed_signers files."""
    return tmp_path
