"""How fast the pilot CLI is, as a user feels it: whole ``dragoon`` processes, wall time.

Starts a real relay and a real drone on loopback (as tests/cli does), logs a
pilot in, then times, over ``--runs`` runs each:

- ``dragoon --help``;
- ``dragoon run DRONE -- true``: submit, follow both streams, exit with the code;
- the CLI's own start-up inside that: the same ``dragoon run`` pointed at a
  loopback port where nothing listens, so it does everything ``run`` does up
  to its first request (interpreter, imports, settings, session, key) and
  stops at a refused connection, which costs well under a millisecond.

Prints a Markdown table (p50, p90, min) for docs/benchmarks.md.

    .venv/bin/python bench/bench_cli.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.relay import RelayProcess, fresh_totp, new_signer, wait_until  # noqa: E402

DRONE = "bench-drone"


def timed(argv: list[str], env: dict[str, str], *, expect: int) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(argv[2:])}: exit {done.returncode}, expected {expect}: "
                         f"{done.stderr.decode(errors='replace')}")
    return elapsed


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return (f"| {name} | {statistics.median(ordered) * 1000:.0f} ms | {p90 * 1000:.0f} ms "
            f"| {ordered[0] * 1000:.0f} ms |")


def measure(runs: int, make: Callable[[], float]) -> list[float]:
    make()  # one warm-up run: the page cache, not the first-ever import, is what users see
    return [make() for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    dragoon = [sys.executable, "-m", "dragoon"]

    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        root = Path(tmp)
        home = root / "home"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("DRAGOON_") and k != "SSH_AUTH_SOCK"}
        env.update({"HOME": str(home), "XDG_STATE_HOME": str(home / "state"),
                    "XDG_CONFIG_HOME": str(home / "config")})
        with RelayProcess(root / "relay") as relay:
            key = home / ".ssh" / "id_ed25519"
            new_signer(key)
            secret = relay.add_operator("bench", Path(f"{key}.pub"))
            subprocess.run([*dragoon, "login", "--relay", relay.url, "--key", str(key),
                            "--totp", fresh_totp(secret)], env=env, check=True,
                           capture_output=True)
            token = subprocess.run([*dragoon, "enroll", DRONE], env=env, check=True,
                                   capture_output=True, text=True).stdout.strip()
            subprocess.run([*dragoon, "drone", "join", token, "--data", str(root / "drone"),
                            "--slots", "2"], env=env, check=True, capture_output=True)
            drone = subprocess.Popen([*dragoon, "drone", "run", "--data", str(root / "drone")],
                                     env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
            try:
                wait_until(lambda: any(
                    d["state"] == "online" for d in json.loads(subprocess.run(
                        [*dragoon, "drones", "--json"], env=env, capture_output=True,
                        check=True).stdout)), timeout=30, interval=0.2, message="drone online")
                help_times = measure(args.runs, lambda: timed([*dragoon, "--help"], env,
                                                              expect=0))
                run_times = measure(args.runs, lambda: timed(
                    [*dragoon, "run", DRONE, "--", "true"], env, expect=0))
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", 0))
                    dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
                session = home / "state" / "dragoon" / "session.json"
                stored = json.loads(session.read_text())
                session.write_text(json.dumps({**stored, "relay": dead}))
                startup_times = measure(args.runs, lambda: timed(
                    [*dragoon, "run", DRONE, "--", "true"], env, expect=255))
            finally:
                drone.terminate()
                drone.wait(10)

    print(f"runs: {args.runs} each (after one warm-up), whole processes, wall time\n")
    print("| command | p50 | p90 | min |")
    print("|---|---:|---:|---:|")
    print(summary("`dragoon --help`", help_times))
    print(summary("`dragoon run DRONE -- true`", run_times))
    print(summary("start-up of `dragoon run` (to its first request)", startup_times))


if __name__ == "__main__":
    main()
