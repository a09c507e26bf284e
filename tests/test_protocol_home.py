"""Protocol bytes are built in shared/ only: relay/, drone/, cockpit/ and dragoon/ call it.

A second copy of a signed string elsewhere is a fork of the protocol waiting
to drift (STYLE.md), so the sources outside shared/ are read as Python (not
grepped as text, so prose in docstrings and comments may name the protocol)
and must not hold:

- a string or bytes literal with a protocol marker: a signed-string version
  tag (``RE-V1``...), a signature namespace, an RE-V1 header name (any case)
  or ``body_sha256``;
- a name of one of shared's byte-building parts (the canonical builders, the
  version-tag, namespace and header constants);
- ``body_sha256`` anywhere but as the keyword of a call to shared's streamed
  request API (``sign_streamed_request``, ``verify_request``).

fixtures/, docs/ and tests/ restate the bytes on purpose and are not read;
neither is bench/, which times the primitives themselves. There are no
exceptions: the login is signed and checked through shared/login_auth.py too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from dragoon.shared import constants as c

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE_SHARED: Final = ("relay", "drone", "cockpit", "dragoon")

VERSION_TAGS: Final = (c.REQUEST_VERSION, c.LOGIN_VERSION, c.TASK_VERSION, c.BINDING_VERSION,
                       "dragoon-join-v")
NAMESPACES: Final = (c.NS_REQUEST, c.NS_LOGIN, c.NS_TASK, c.NS_SUBMIT, c.NS_DRONE_KEY)
HEADERS: Final = (c.HEADER_TIMESTAMP, c.HEADER_NONCE, c.HEADER_FINGERPRINT, c.HEADER_SIGNATURE)
STREAMED_HASH: Final = "body_sha256"
STREAMED_API: Final = frozenset({"sign_streamed_request", "verify_request"})

BUILDERS: Final = frozenset({
    "canonical_request", "canonical_query", "canonical_task", "canonical_task_from_hash",
    "login_string", "signed_data", "binding_message",
    "REQUEST_VERSION", "LOGIN_VERSION", "TASK_VERSION", "BINDING_VERSION",
    "NS_REQUEST", "NS_LOGIN", "NS_TASK", "NS_SUBMIT", "NS_DRONE_KEY",
    "HEADER_TIMESTAMP", "HEADER_NONCE", "HEADER_FINGERPRINT", "HEADER_SIGNATURE",
})


def sources() -> list[Path]:
    return sorted(p for part in OUTSIDE_SHARED for p in (ROOT / part).rglob("*.py"))


def markers_in(text: str) -> list[str]:
    found = [m for m in (*VERSION_TAGS, *NAMESPACES, STREAMED_HASH) if m in text]
    found += [h for h in HEADERS if h.lower() in text.lower()]
    return found


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of every docstring node: prose may name the protocol."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _streamed_keywords(tree: ast.AST) -> set[int]:
    """``body_sha256=`` keywords handed to shared's streamed-request API."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in STREAMED_API:
                ids.update(id(k) for k in node.keywords if k.arg == STREAMED_HASH)
    return ids


def _names(node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.Name):
        yield node.id
    elif isinstance(node, ast.Attribute):
        yield node.attr
    elif isinstance(node, ast.alias):
        yield node.name.rsplit(".", 1)[-1]
        if node.asname:
            yield node.asname
    elif isinstance(node, ast.arg | ast.keyword) and node.arg is not None:
        yield node.arg  # a parameter, or a keyword argument (None for **kwargs)
    elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        yield node.name


def violations(path: Path, rel: str) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    docstrings, allowed_keywords = _docstrings(tree), _streamed_keywords(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Constant) and id(node) not in docstrings:
            value = node.value
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            if isinstance(value, str):
                found += [f"{rel}:{line}: literal holds {m!r}" for m in markers_in(value)]
        for name in _names(node):
            if name in BUILDERS:
                found.append(f"{rel}:{line}: uses {name}, which only shared/ may")
            if name == STREAMED_HASH and id(node) not in allowed_keywords:
                found.append(f"{rel}:{line}: {STREAMED_HASH} outside a call to "
                             f"{' or '.join(sorted(STREAMED_API))}")
    return found


def test_the_protocol_bytes_are_built_in_shared_only() -> None:
    found = [v for path in sources() for v in violations(path, path.relative_to(ROOT).as_posix())]
    assert found == []


@pytest.mark.parametrize(("source", "expected"), [
    ('MESSAGE = b"RE-TASK-V1\\n" + task_id', "literal holds 'RE-TASK-V1'"),
    ('lines = ["RE-V1", method]', "literal holds 'RE-V1'"),
    ('ns = "dragoon-task-v1"', "literal holds 'dragoon-task-v1'"),
    ('h = headers.get("x-re-key-fingerprint")', "literal holds 'X-RE-Key-Fingerprint'"),
    ('h = {f"X-RE-Signature": s}', "literal holds 'X-RE-Signature'"),
    ("from dragoon.shared.canonical import canonical_task", "uses canonical_task"),
    ("msg = canonical.canonical_request(method='GET')", "uses canonical_request"),
    ("sig = signer.sign(c.NS_TASK, message)", "uses NS_TASK"),
    ("line = c.TASK_VERSION", "uses TASK_VERSION"),
    ("sig = signer.sign(NS_LOGIN, login_string(challenge, fpr))", "uses login_string"),
    ("from dragoon.shared.constants import NS_LOGIN", "uses NS_LOGIN"),
    ('ns = "dragoon-login-v1"', "literal holds 'dragoon-login-v1'"),
    ('text = f"RE-LOGIN-V1\\n{challenge}"', "literal holds 'RE-LOGIN-V1'"),
    ("def send(body_sha256: str) -> None: ...", "body_sha256 outside a call"),
    ("canonical(body=b'', body_sha256=digest)", "body_sha256 outside a call"),
])
def test_the_check_catches_a_copy_of_the_bytes(tmp_path: Path, source: str, expected: str
                                               ) -> None:
    path = tmp_path / "copy.py"
    path.write_text(source + "\n", encoding="utf-8")
    found = violations(path, "relay/copy.py")
    assert any(expected in v for v in found), found


def test_the_check_lets_prose_and_shared_calls_be(tmp_path: Path) -> None:
    path = tmp_path / "fine.py"
    path.write_text(
        '"""Every request is signed RE-V1 (X-RE-Signature, dragoon-request-v1)."""\n'
        "def upload(signer, digest):\n"
        '    """Signed over body_sha256, the hash computed ahead (RE-TASK-V1 aside)."""\n'
        "    # body_sha256 in a comment is prose too\n"
        "    return sign_streamed_request(signer, method='POST', path='/v1/worker/blob',\n"
        "                                 body_sha256=digest)\n"
        "def login(signer, challenge):\n"
        '    """Signs RE-LOGIN-V1 in dragoon-login-v1, through shared."""\n'
        "    return sign_login(signer, challenge=challenge, fingerprint=signer.fingerprint)\n",
        encoding="utf-8",
    )
    assert violations(path, "drone/fine.py") == []
