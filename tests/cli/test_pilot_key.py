"""The pilot's encryption key file (cockpit/client/pilot_key.py): made once, 0600, the same
key for every command (two making it at once included), refused when others can read it;
certified by a key file or an ssh-agent key alike."""

from __future__ import annotations

import shutil
import stat
import threading
from pathlib import Path

import pytest
from dragoon.cockpit.client.config import PilotConfigError
from dragoon.cockpit.client.pilot_key import (
    load_or_make_pilot_key,
    pilot_certificate,
    pilot_key_path,
    publication,
)
from dragoon.shared.pilots_list import check_pilot_x25519_certificate
from dragoon.shared.signers import AgentSigner
from dragoon.shared.trust import X25519Key, parse_x25519, x25519_text

from tests.support.agent import running_ssh_agent
from tests.support.relay import new_signer


def env_in(home: Path) -> dict[str, str]:
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / "config")}


def test_made_once_0600_beside_the_config_and_kept(tmp_path: Path) -> None:
    env = env_in(tmp_path)
    path = pilot_key_path(env)
    assert path == tmp_path / "config" / "dragoon" / "pilot.x25519"
    key = load_or_make_pilot_key(env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_make_pilot_key(env) == key
    assert X25519Key.load(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["pilot.x25519"]  # no temp file left
    assert x25519_text(key.secret) not in repr(key)  # never the secret in a log line


def test_commands_making_it_at_once_agree_on_one_key(tmp_path: Path) -> None:
    env = env_in(tmp_path)
    made: list[X25519Key] = []
    threads = [threading.Thread(target=lambda: made.append(load_or_make_pilot_key(env)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 8 and len(set(made)) == 1
    assert X25519Key.load(pilot_key_path(env)) == made[0]


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    env = env_in(tmp_path)
    load_or_make_pilot_key(env)
    pilot_key_path(env).chmod(0o644)
    with pytest.raises(PilotConfigError, match=r"readable by others \(mode 0644\): chmod 600"):
        load_or_make_pilot_key(env)


def test_a_damaged_key_file_is_one_clear_error(tmp_path: Path) -> None:
    env = env_in(tmp_path)
    path = pilot_key_path(env)
    path.parent.mkdir(parents=True)
    path.write_text("not a key\n")
    path.chmod(0o600)
    with pytest.raises(PilotConfigError, match="not a dragoon X25519 private key; remove it"):
        load_or_make_pilot_key(env)


def test_a_key_file_signer_certifies_it(tmp_path: Path) -> None:
    signer = new_signer()
    key = load_or_make_pilot_key(env_in(tmp_path))
    body = publication(signer, key)
    assert parse_x25519(body["x25519_public_key"]) == key.public
    check_pilot_x25519_certificate(signer.public_key, key.public, body["x25519_signature"])


@pytest.mark.skipif(shutil.which("ssh-agent") is None, reason="needs ssh-agent")
def test_an_agent_key_certifies_it(tmp_path: Path) -> None:
    new_signer(tmp_path / "id_ed25519")
    key = load_or_make_pilot_key(env_in(tmp_path))
    with running_ssh_agent() as agent:
        agent.add(tmp_path / "id_ed25519")
        signer = AgentSigner.first(str(agent.socket_path))
        certificate = pilot_certificate(signer, key)
    check_pilot_x25519_certificate(signer.public_key, key.public, certificate)
