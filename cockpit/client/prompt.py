"""Blocking prompts asked from inside the event loop: Ctrl-C must still interrupt them.

``asyncio.run`` replaces the SIGINT handler with one that only cancels the main
task, which a coroutine blocked in ``getpass`` never notices: the first Ctrl-C
at a prompt would be swallowed. While a prompt waits, Python's own handler is
put back, so Ctrl-C raises ``KeyboardInterrupt`` there and the verb ends as
every verb does on Ctrl-C (one line, exit 130), on a line of its own: getpass
leaves the cursor after the prompt, so a newline is written first.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def interruptible() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        sys.stderr.flush()
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
