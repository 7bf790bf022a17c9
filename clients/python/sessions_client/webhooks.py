"""Checking a webhook the sessions service sent, as the Standard Webhooks convention says
(https://www.standardwebhooks.com/): the signature over `{webhook-id}.{webhook-timestamp}.{body}`
with the `whsec_` secret, compared in constant time, and a timestamp close to now. The
standard library only: a receiver needs no HTTP client for it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["TOLERANCE", "WebhookVerificationError", "verify_webhook"]

# Seconds a webhook's timestamp may be from the receiver's clock (either way): older ones may
# be replays.
TOLERANCE = 300


class WebhookVerificationError(ValueError):
    """The request is not a webhook of the service holding this secret (or it is too old)."""


def _key(secret: str) -> bytes:
    if not secret.startswith("whsec_"):
        raise WebhookVerificationError("the secret must start with whsec_")
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (ValueError, binascii.Error):
        raise WebhookVerificationError("the secret is not whsec_ and base64") from None


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: int = TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """The webhook's message (`type`, `timestamp` and `data`, the event) once its signature
    checks out; WebhookVerificationError otherwise. `headers` as received (names in any case),
    `body` the raw bytes, before any JSON parsing."""
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        message_id = lowered["webhook-id"]
        stamp = lowered["webhook-timestamp"]
        signatures = lowered["webhook-signature"]
    except KeyError as missing:
        raise WebhookVerificationError(f"the {missing.args[0]} header is missing") from None
    if not stamp.isascii() or not stamp.isdigit():
        raise WebhookVerificationError("webhook-timestamp is not Unix seconds")
    if abs((time.time() if now is None else now) - int(stamp)) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is too far from now")
    raw = body.encode() if isinstance(body, str) else body
    signed = f"{message_id}.{stamp}.".encode() + raw
    expected = base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest())
    for given in signatures.split():
        version, _, value = given.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            message: dict[str, Any] = json.loads(raw)
            return message
    raise WebhookVerificationError("no signature matches")
