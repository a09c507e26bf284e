"""A pilot whose SSH key lives only in a real ssh-agent runs sealed tasks end to end
(issue 13): the agent signs the login, the requests and the task's order; the pilot's own
X25519 key, certified once by the agent's key, opens what the drone sealed. The agent can
sign but not decrypt, and nothing more than that is asked of it."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.cli.conftest import Pilot, make_pilot
from tests.support.agent import running_ssh_agent
from tests.support.relay import RelayProcess, fresh_totp


def test_a_pilot_with_only_an_agent_key_runs_and_reads_a_sealed_task(
        relay: RelayProcess, drone: str, tmp_path: Path) -> None:
    pilot: Pilot = make_pilot(relay, tmp_path, "agentonly")
    with running_ssh_agent() as agent:
        agent.add(pilot.key)
        pilot.key.unlink()  # only the agent holds the private half now
        public = Path(f"{pilot.key}.pub")
        pilot.extra_env["SSH_AUTH_SOCK"] = str(agent.socket_path)
        pilot.ok("login", "--relay", relay.url, "--key", str(public),
                 "--totp", fresh_totp(pilot.totp_secret))
        done = pilot.cli("run", drone, "--", "echo sealed-through-the-agent; echo err >&2")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "sealed-through-the-agent\n"
        assert done.stderr == "err\n"
        task = pilot.json("tasks", "--limit", "1")[0]
        assert pilot.json("task", task["id"])["spec"]["command"].startswith("echo sealed")
        assert "sealed-through-the-agent" in pilot.ok("logs", task["id"])
    key_file = pilot.home / "config" / "dragoon" / "pilot.x25519"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
