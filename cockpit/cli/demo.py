"""``dragoon demo``: a whole dragoon on loopback, in a temp dir, gone when it ends.

It makes a relay, a pilot key and operator, serves the relay on a free
loopback port, enrolls, joins and runs a drone, logs in, and submits a sample
task that prints for a while, writes an artifact and sends inbox messages;
then it opens the cockpit (or, with ``--headless``, follows the task in the
terminal). The relay and the drone run as ``dragoon relay serve``
and ``dragoon drone run`` subprocesses (cockpit/ never imports relay/ or
drone/), and the pilot's settings point into the temp dir, so the demo never
touches the user's own session or config. Every process and file it made is
removed at the end however the demo ends: ``q`` in the cockpit, Ctrl-C,
SIGTERM, or its terminal closing (SIGHUP).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

DRONE = "demo-drone"
SAMPLE_COMMAND = (
    'echo "demo task on $(hostname): training a very small model"; '
    "for i in 1 2 3 4 5 6; do "
    'echo "epoch $i/6  loss 0.$((70 - i * 10))"; '
    'echo "warning: epoch $i used the toy data set" >&2; '
    'if [ "$i" = 3 ]; then echo "halfway: epoch 3 of 6 done" >> "$DRAGOON_INBOX"; fi; '
    "sleep 0.4; done; "
    'mkdir -p out && echo "weights after 6 epochs" > out/model.txt; '
    'echo "finished: model written to out/model.txt" >> "$DRAGOON_INBOX"; '
    'echo "done"'
)
START_DEADLINE = 30.0
STOP_DEADLINE = 1.5  # the relay holds long-polls up to 5 s on SIGTERM; its data goes anyway


class DemoError(Exception):
    """A step of the demo failed; the message says which."""


def dragoon_argv() -> list[str]:
    """``python -P -m dragoon``: -P keeps the working directory off sys.path, since in a
    checkout its ``dragoon/`` folder (the entry point alone) would shadow the installed
    package and hide ``dragoon.relay`` and the rest."""
    return [sys.executable, "-P", "-m", "dragoon"]


def say(message: str) -> None:
    """A progress line on stderr; a terminal that is gone (closed, SIGHUP) is no reason to
    stop cleaning up, so a line that cannot be written is dropped."""
    with contextlib.suppress(OSError):
        click.secho(f"demo: {message}", fg="cyan", err=True)


class Demo:
    """The temp dir and the processes of one demo; ``close`` undoes all of it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env = dict(os.environ)
        self.env.pop("SSH_AUTH_SOCK", None)  # the demo's own key, never the user's agent
        self.env.update({
            "DRAGOON_CONFIG": str(root / "config.toml"),
            "XDG_STATE_HOME": str(root / "state"),
            "DRAGOON_KEY": str(root / "pilot"),
        })
        self.env.pop("DRAGOON_RELAY", None)
        self.env.pop("DRAGOON_CA_CERT", None)
        self.relay_url = ""

    # -- processes --------------------------------------------------------------------------

    def dragoon(self, *args: str, check: bool = True) -> str:
        """Run one ``dragoon`` command to completion; its stdout, or an error with its stderr."""
        done = subprocess.run([*dragoon_argv(), *args], env=self.env, capture_output=True,
                              timeout=60, check=False)
        if check and done.returncode != 0:
            last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            raise DemoError(f"`dragoon {args[0]} {args[1] if len(args) > 1 else ''}` "
                            f"failed: {last[0]}")
        return done.stdout.decode(errors="replace")

    def spawn(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        """A long-running ``dragoon`` process in its own session, logging to a file."""
        out = open(self.root / log, "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen([*dragoon_argv(), *args], env=self.env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.processes.append(process)
        return process

    def wait_for_line(self, process: subprocess.Popen[bytes], log: str,
                      pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + START_DEADLINE
        path = self.root / log
        while time.monotonic() < deadline:
            text = path.read_text(errors="replace") if path.exists() else ""
            match = re.search(pattern, text)
            if match:
                return match
            if process.poll() is not None:
                tail = text.strip().splitlines()[-1:] or ["no output"]
                raise DemoError(f"{log} exited with {process.returncode}: {tail[0]}")
            time.sleep(0.05)
        raise DemoError(f"{log} did not start within {START_DEADLINE:.0f} s")

    def close(self) -> None:
        """Stop every process the demo started (and what they spawned), remove the temp dir.

        All get SIGTERM at once; what has not exited a few seconds later is
        killed, and so are the task processes the drone had spawned.
        """
        import psutil

        family: list[psutil.Process] = []
        for process in self.processes:
            with contextlib.suppress(psutil.Error):
                family += psutil.Process(process.pid).children(recursive=True)
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_DEADLINE
        for process in self.processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for child in family:
            with contextlib.suppress(psutil.Error):
                child.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- steps ------------------------------------------------------------------------------

    def start(self) -> None:
        from dragoon.shared.keys import PrivateKey

        say(f"working in {self.root}")
        self.dragoon("relay", "init", "--data", str(self.root / "relay"))
        PrivateKey.generate_ed25519("demo-pilot").save(self.root / "pilot")
        out = self.dragoon("relay", "add-operator", "--data", str(self.root / "relay"),
                           "--name", "demo", "--key", str(self.root / "pilot.pub"), "--no-qr")
        secret = re.search(r"TOTP secret: (\S+)", out)
        if secret is None:
            raise DemoError("`dragoon relay add-operator` printed no TOTP secret")
        say("relay made, pilot key and operator `demo` added")

        relay = self.spawn("relay", "serve", "--data", str(self.root / "relay"),
                           "--bind", "127.0.0.1:0", log="relay.log")
        self.relay_url = self.wait_for_line(
            relay, "relay.log", r"listening on (https?://\S+)").group(1)
        (self.root / "config.toml").write_text(f'relay = "{self.relay_url}"\n')
        say(f"relay serving on {self.relay_url}")

        self.log_in(secret.group(1))
        token = self.dragoon("enroll", DRONE, "--labels", "demo").strip()
        self.dragoon("drone", "join", token, "--data", str(self.root / "drone"),
                     "--slots", "2", "--labels", "demo")
        drone = self.spawn("drone", "run", "--data", str(self.root / "drone"), log="drone.log")
        self.wait_until_online(drone)
        say(f"drone {DRONE} enrolled, joined and online")

    def log_in(self, secret: str) -> None:
        import pyotp
        from dragoon.cockpit.cli.session import log_in

        code = pyotp.TOTP(secret).now()  # in-process: the code never sits in an argv
        asyncio.run(log_in(relay=self.relay_url, key=None, ca_cert=None, totp=code,
                           env=self.env))
        say("logged in (key + TOTP)")

    def wait_until_online(self, drone: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            drones = json.loads(self.dragoon("drones", "--json"))
            if any(d["name"] == DRONE and d["state"] == "online" for d in drones):
                return
            if drone.poll() is not None:
                raise DemoError(f"the drone exited with {drone.returncode} (see drone.log)")
            time.sleep(0.2)
        raise DemoError(f"drone {DRONE} did not come online within {START_DEADLINE:.0f} s")

    def submit_sample(self) -> str:
        task_id = self.dragoon("submit", DRONE, "--name", "demo training run",
                               "--artifact", "out/*", "--", SAMPLE_COMMAND).strip()
        say(f"submitted sample task {task_id}")
        return task_id

    def follow(self, task_id: str) -> dict[str, Any]:
        """Show the task's output in the terminal, then report what it left behind."""
        say(f"following {task_id} (dragoon logs -f {task_id})")
        subprocess.run([*dragoon_argv(), "logs", "-f", task_id], env=self.env, check=False)
        task: dict[str, Any] = json.loads(self.dragoon("task", task_id, "--json"))
        say(f"task {task_id} {task['state']} (exit code {task.get('exit_code')})")
        artifacts = json.loads(self.dragoon("artifacts", task_id, "--json"))
        say("artifacts: " + (", ".join(a["path"] for a in artifacts) or "none"))
        for line in self.dragoon("inbox").splitlines():
            say(f"inbox: {line}")
        return task


def run_demo(*, headless: bool) -> int:
    """The whole demo; 0 when the sample task succeeded."""
    root = Path(tempfile.mkdtemp(prefix="dragoon-demo-"))
    demo = Demo(root)
    try:
        demo.start()
        task_id = demo.submit_sample()
        if not headless:
            say("opening the cockpit (q quits; the demo then cleans up)")
            subprocess.run([*dragoon_argv(), "cockpit"], env=demo.env, check=False)
            task = json.loads(demo.dragoon("task", task_id, "--json"))
        else:
            task = demo.follow(task_id)
        return 0 if task.get("state") == "succeeded" else 1
    finally:
        # A second signal (the shell forwarding SIGHUP, then SIGTERM; an impatient Ctrl-C)
        # must not cut the clean-up short: it runs to the end whatever arrives meanwhile.
        for signum in ENDINGS:
            signal.signal(signum, signal.SIG_IGN)
        demo.close()
        say("cleaned up: processes stopped, temp dir removed")


# Every way a demo is told to end: Ctrl-C, `kill`, and its terminal closing. The relay and
# the drone run in sessions of their own (so a Ctrl-C reaches only the foreground), so no
# signal reaches them from the terminal: this process must stop them, whichever it gets.
ENDINGS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM and SIGHUP clean up like Ctrl-C does."""
    raise KeyboardInterrupt


@click.command()
@click.option("--headless", is_flag=True,
              help="No cockpit: follow the sample task, exit 0 when it succeeded.")
def demo(headless: bool) -> None:
    """Relay + drone on loopback in a temp dir, then the cockpit.

    Everything runs from a temporary directory that is removed at the end,
    also on Ctrl-C; your own dragoon settings and session are not touched.
    """
    # Ctrl-C reaches the foreground child (`logs -f`, the cockpit) and this
    # process alike; the relay and drone run in their own sessions and are
    # stopped together by Demo.close.
    previous = {signum: signal.signal(signum, _terminate)
                for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        sys.exit(run_demo(headless=headless))
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            click.echo("dragoon: demo interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a step failed: say which, as one line, never a traceback
        with contextlib.suppress(OSError):
            click.echo(f"dragoon: demo: {exc}", err=True)
        sys.exit(1)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
