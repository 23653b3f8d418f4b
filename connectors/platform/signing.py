"""The platform's message-push signature: lowercase hex MD5(app_key + raw_body + app_secret).

MD5 is the platform's choice, not ours (Doudian's DoudianOpMsgRequest.checkSign); it is compared in
constant time and against every configured secret so a secret can be rotated without downtime.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


def sign(app_key: str, body: bytes, app_secret: str) -> str:
    digest = hashlib.md5(app_key.encode(), usedforsecurity=False)
    digest.update(body)  # fed in parts: the body is not copied into a concatenation
    digest.update(app_secret.encode())
    return digest.hexdigest()


def signature_matches(app_key: str, body: bytes, secrets: Iterable[str], signature: str) -> bool:
    given = signature.strip().lower().encode()
    matched = False
    for secret in secrets:  # no early exit: the time taken does not tell which secret matched
        matched |= hmac.compare_digest(sign(app_key, body, secret).encode(), given)
    return matched
