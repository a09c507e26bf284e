"""Exit codes of the pilot verbs (docs/cli.md documents them; scripts rely on them)."""

from typing import Final

OK: Final = 0
FAILURE: Final = 1  # the relay refused for another reason, or an unexpected failure
USAGE: Final = 2  # malformed flag values, missing arguments or settings (click's own code)
AUTH: Final = 3  # not logged in, session expired or revoked, wrong TOTP, locked out
NOT_FOUND: Final = 4  # unknown task, drone, artifact or file
UNREACHABLE: Final = 5  # relay unreachable or not answering
TLS: Final = 6  # TLS handshake or certificate failure
KEY: Final = 7  # key file missing/unreadable, agent without the key, key unknown to the relay
LOCAL_FILE: Final = 8  # download target exists without --force, or failed its SHA-256 check
TAMPERED: Final = 9  # a task's sealed stream does not open: cut, reordered or forged on the way
PIPE_CLOSED: Final = 141  # `dragoon run`: its stdout or stderr reader went away (128 + SIGPIPE)
INTERRUPTED: Final = 130  # Ctrl-C (`run` and `logs -f` detach; the task goes on)
RUN_OWN_FAILURE: Final = 255  # `dragoon run`: dragoon itself failed (like ssh), not the task
