"""docs/curl.md, run as written: bash, curl and ssh-keygen against a real relay.

The blocks that follow a ``<!-- tested -->`` comment are joined into one bash
script and run with RELAY, KEY and TOTP_SECRET set, the way a reader would
after setting the three variables the page asks for.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.keys import generate_key
from tests.support.relay import RelayProcess

DOC = Path(__file__).resolve().parents[2] / "docs" / "curl.md"
TESTED_BLOCK = re.compile(r"<!-- tested -->\n```sh\n(.*?)```", re.DOTALL)
ANSWER = re.compile(r"(.*?)\nHTTP (\d{3})\n", re.DOTALL)


def _tested_blocks(text: str) -> list[str]:
    return TESTED_BLOCK.findall(text)


def test_the_doc_marks_its_tested_blocks() -> None:
    blocks = _tested_blocks(DOC.read_text())
    assert len(blocks) >= 5
    script = "\n".join(blocks)
    for needle in ("ssh-keygen -Y sign", "-n \"$1\"", "sha256sum", "dragoon-request-v1",
                   "dragoon-login-v1", "/v1/auth/challenge", "/v1/auth/login"):
        assert needle in script, needle


def test_curl_doc_session_against_a_real_relay(relay: RelayProcess, tmp_path: Path) -> None:
    for tool in ("curl", "ssh-keygen", "bash"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (tests/run.sh installs curl and openssh-client)")
    key = generate_key(tmp_path / "alice", "ed25519")
    secret = relay.add_operator("alice", Path(f"{key}.pub"))
    script = "\n".join(_tested_blocks(DOC.read_text()))
    # After the page's own blocks: the session it logged out of is dead, and the token shows.
    script += '\nre_curl GET /v1/workers\nprintf "TOKEN=%s\\n" "$TOKEN"\n'
    env = {**os.environ, "RELAY": relay.url, "KEY": str(key), "TOTP_SECRET": secret,
           # python3 with pyotp, for the TOTP code when oathtool is absent.
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr + done.stdout

    answers = [(int(status), body) for body, status in ANSWER.findall(done.stdout)]
    assert [status for status, _ in answers] == [200, 200, 401, 200, 401], done.stdout
    (_, workers), (_, tasks), (_, tampered), (_, logout), (_, after) = answers
    assert workers.strip() == '{"drones":[]}'
    assert '"tasks":[]' in tasks
    assert '"error":"bad_signature"' in tampered.replace(" ", "")
    assert '"ok":true' in logout.replace(" ", "")
    assert '"error":"bad_session"' in after.replace(" ", "")

    token = re.search(r"^TOKEN=(\S+)$", done.stdout, re.MULTILINE)
    assert token, done.stdout
    # The relay's own log never holds the secrets that went through it.
    log = relay.stderr_text()
    assert token.group(1) not in log
    assert secret not in log
