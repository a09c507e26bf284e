"""How many signatures per second shared/ makes and checks, per key type, on one core.

Every request the relay serves costs one SSHSIG verification (RE-V1), and
every task it hands out one ed25519 signature, so these rates bound what one
relay core can authenticate. Keys come fresh from ``ssh-keygen``; the agent
figure uses a real ``ssh-agent`` (started here, on its own socket).

    .venv/bin/python bench/bench_signatures.py [--seconds 2] [--rounds 10]

The process pins itself to CPU 0 when the OS allows, before starting the
agent, so the agent shares that core too: the agent rate includes both ends.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dragoon.shared import constants, sshsig  # noqa: E402 - after the path set-up above
from dragoon.shared.canonical import canonical_request  # noqa: E402
from dragoon.shared.keys import load_private_key_file  # noqa: E402
from dragoon.shared.request_auth import KeyMatch, VerifiedRequest, sign_request, verify_request  # noqa: E402
from dragoon.shared.signers import AgentSigner, KeyFileSigner  # noqa: E402

from tests.support.agent import running_ssh_agent  # noqa: E402

KINDS = {"ed25519": ["-t", "ed25519"], "RSA-3072": ["-t", "rsa", "-b", "3072"],
         "ECDSA P-256": ["-t", "ecdsa", "-b", "256"]}
# One RE-V1 request as the relay checks it, built by shared so it cannot drift from the protocol.
MESSAGE = canonical_request(method="POST", path="/v1/tasks", query="", timestamp="1763900000",
                            nonce="0" * 32, fingerprint="SHA256:x", body_sha256="f" * 64)


def rate(operation: Callable[[], object], seconds: float, rounds: int = 10) -> float:
    """Operations per second of ``operation``: the best of ``rounds`` runs sharing ``seconds``.

    The best round, as ``timeit`` advises: other load on the machine only ever
    slows a round down, so the fastest is the closest to the code's own cost.
    """
    operation()  # warm up caches and lazy imports
    best = 0.0
    for _round in range(rounds):
        count, start = 0, time.perf_counter()
        deadline = start + seconds / rounds
        while True:
            for _ in range(10):
                operation()
            count += 10
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, count / (now - start))
    return best


def pin_to_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
        return "pinned to CPU 0"
    return "not pinned (no sched_setaffinity here)"


def keygen(directory: Path, name: str, args: list[str]) -> Path:
    path = directory / name.replace(" ", "-")
    subprocess.run(["ssh-keygen", "-q", *args, "-N", "", "-f", str(path)], check=True)
    return path


def bench_key(path: Path, seconds: float, rounds: int) -> dict[str, float]:
    private = load_private_key_file(path)
    public = private.public_key
    signer = KeyFileSigner(private)
    raw = private.sign_ssh(MESSAGE)
    blob_b64 = sshsig.encode_b64(signer.sign(constants.NS_REQUEST, MESSAGE))
    headers = sign_request(signer, method="POST", path="/v1/tasks", body=b"{}",
                           timestamp=1_763_900_000)
    match = KeyMatch(public, "pilot")

    def verify_one_request() -> None:
        result = verify_request(method="POST", raw_path="/v1/tasks", raw_query="",
                                headers=headers, body=b"{}", lookup=lambda _f, _t: match,
                                now=1_763_900_000)
        assert isinstance(result, VerifiedRequest)

    return {
        "raw sign": rate(lambda: private.sign_ssh(MESSAGE), seconds, rounds),
        "raw verify": rate(lambda: public.verify_ssh_signature(raw, MESSAGE), seconds, rounds),
        "SSHSIG sign": rate(lambda: signer.sign(constants.NS_REQUEST, MESSAGE), seconds, rounds),
        "SSHSIG verify": rate(
            lambda: sshsig.verify_b64(blob_b64, constants.NS_REQUEST, MESSAGE, public),
            seconds, rounds),
        "RE-V1 verify": rate(verify_one_request, seconds, rounds),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per figure")
    parser.add_argument("--rounds", type=int, default=10,
                        help="rounds per figure; the best one is reported")
    args = parser.parse_args()
    pinning = pin_to_one_core()
    print(f"python {platform.python_version()}, {platform.machine()}, nproc {os.cpu_count()}, "
          f"{pinning}, best of {args.rounds} rounds in {args.seconds:g} s per figure")
    with tempfile.TemporaryDirectory(prefix="dragoon-bench-") as tmp:
        directory = Path(tmp)
        paths = {name: keygen(directory, name, kind_args) for name, kind_args in KINDS.items()}
        results = {name: bench_key(path, args.seconds, args.rounds)
                   for name, path in paths.items()}
        with running_ssh_agent() as agent:
            agent.add(paths["ed25519"])
            agent_signer = AgentSigner.first(str(agent.socket_path))
            agent_rate = rate(lambda: agent_signer.sign(constants.NS_REQUEST, MESSAGE),
                              args.seconds, args.rounds)
    columns = list(next(iter(results.values())))
    print()
    print("| key | " + " | ".join(f"{c} /s" for c in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name, figures in results.items():
        print(f"| {name} | " + " | ".join(f"{figures[c]:,.0f}" for c in columns) + " |")
    print()
    print(f"ed25519 SSHSIG sign through ssh-agent (AgentSigner): {agent_rate:,.0f} /s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
