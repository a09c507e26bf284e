"""dragoon's protocol core: keys, SSHSIG, signers, canonical forms, request and login signing.

Pure and typed: no network or database I/O (reading a key file and talking to
the local ssh-agent are its only I/O), and no import of relay, drone or cockpit.
"""

from dragoon.shared.agent import AgentClient
from dragoon.shared.canonical import (
    canonical_json,
    canonical_query,
    canonical_request,
    canonical_task,
    login_string,
    sha256_hex,
    spec_sha256,
)
from dragoon.shared.enrollment import JoinToken
from dragoon.shared.errors import (
    AgentError,
    DragoonError,
    KeyLoadError,
    SignatureError,
    TokenFormatError,
    WireFormatError,
)
from dragoon.shared.keys import (
    PrivateKey,
    PublicKey,
    fingerprint_of_blob,
    load_private_key_file,
    load_public_key_file,
)
from dragoon.shared.login_auth import sign_login, verify_login
from dragoon.shared.models import DroneState, Stream, TaskState
from dragoon.shared.request_auth import (
    KeyMatch,
    RequestRejected,
    VerifiedRequest,
    sign_request,
    verify_request,
)
from dragoon.shared.signers import AgentSigner, KeyFileSigner, Signer

__all__ = [
    "AgentClient",
    "AgentError",
    "AgentSigner",
    "DragoonError",
    "DroneState",
    "JoinToken",
    "KeyFileSigner",
    "KeyLoadError",
    "KeyMatch",
    "PrivateKey",
    "PublicKey",
    "RequestRejected",
    "SignatureError",
    "Signer",
    "Stream",
    "TaskState",
    "TokenFormatError",
    "VerifiedRequest",
    "WireFormatError",
    "canonical_json",
    "canonical_query",
    "canonical_request",
    "canonical_task",
    "fingerprint_of_blob",
    "load_private_key_file",
    "load_public_key_file",
    "login_string",
    "sha256_hex",
    "sign_login",
    "sign_request",
    "spec_sha256",
    "verify_login",
    "verify_request",
]
