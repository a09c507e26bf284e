"""Protocol constants of PROTOCOL.md, version 1: changing one is a breaking change."""

from typing import Final

NS_REQUEST: Final = "dragoon-request-v1"
NS_LOGIN: Final = "dragoon-login-v1"
NS_TASK: Final = "dragoon-task-v1"
NS_SUBMIT: Final = "dragoon-submit-v1"
# A drone's signature over its own X25519 public key (shared/trust.py, docs/protocol.md).
NS_DRONE_KEY: Final = "dragoon-drone-key-v1"
# A pilot's SSH key's signature over its X25519 public key (shared/pilots_list.py).
NS_PILOT_KEY: Final = "dragoon-pilot-key-v1"
# A drone's signature over the list of the pilots it obeys (shared/pilots_list.py).
NS_DRONE_PILOTS: Final = "dragoon-drone-pilots-v1"

REQUEST_VERSION: Final = "RE-V1"
LOGIN_VERSION: Final = "RE-LOGIN-V1"
TASK_VERSION: Final = "RE-TASK-V1"
# The first line of the enrollment binding's MACed bytes (shared/trust.py, docs/protocol.md).
BINDING_VERSION: Final = "dragoon-enroll-v1"

HEADER_TIMESTAMP: Final = "X-RE-Timestamp"
HEADER_NONCE: Final = "X-RE-Nonce"
HEADER_FINGERPRINT: Final = "X-RE-Key-Fingerprint"
HEADER_SIGNATURE: Final = "X-RE-Signature"
HEADER_AUTHORIZATION: Final = "Authorization"

MAX_CLOCK_SKEW_SECONDS: Final = 60
NONCE_TTL_SECONDS: Final = 300
CHALLENGE_TTL_SECONDS: Final = 60

# Routes a client may call without RE-V1 headers.
UNSIGNED_ROUTES: Final = frozenset(
    {("POST", "/v1/auth/challenge"), ("POST", "/v1/auth/login"), ("POST", "/v1/worker/init")}
)

# Error codes of PROTOCOL.md for request verification, in the order they are checked.
ERR_HEADERS: Final = "bad_request_signature_headers"
ERR_STALE: Final = "stale_timestamp"
ERR_UNKNOWN_KEY: Final = "unknown_key"
ERR_BAD_SESSION: Final = "bad_session"
ERR_FINGERPRINT_MISMATCH: Final = "fingerprint_mismatch"
ERR_BAD_SIGNATURE: Final = "bad_signature"
ERR_REPLAYED_NONCE: Final = "replayed_nonce"
# Key lookup: the key belonged to a drone whose name a newer enrollment took (docs/security.md).
ERR_DRONE_REPLACED: Final = "drone_replaced"
# Check 2, the relay's replay floor (docs/protocol.md): a ``stale_timestamp`` answer to a
# request signed before the floor carries the floor in this field, so that the client
# re-signs with a timestamp at or above it instead of failing.
FIELD_NOT_BEFORE: Final = "not_before"
