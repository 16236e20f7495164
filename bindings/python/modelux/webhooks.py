"""Verify modelux webhooks (Standard Webhooks, https://www.standardwebhooks.com).

Every delivery carries three headers: ``webhook-id`` (the same on every retry: deduplicate on
it), ``webhook-timestamp`` (unix seconds) and ``webhook-signature`` (``v1,<base64>``, possibly
several separated by spaces), the HMAC-SHA256 of ``"{id}.{timestamp}.{body}"`` keyed with the
base64-decoded part of the ``whsec_...`` secret that ``POST /v1/webhooks`` returned::

    from modelux.webhooks import verify_webhook

    event = verify_webhook(secret, request.headers, request.body)  # raises WebhookVerificationError
    if event["type"] == "budget.alert": ...

Pure Python (hmac, base64): usable without the native module. Any Standard Webhooks verifier
(the ``standardwebhooks`` package, Svix's libraries) accepts the same deliveries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any, Mapping, Optional, Union

__all__ = ["WebhookVerificationError", "sign_webhook", "verify_webhook"]


class WebhookVerificationError(Exception):
    """The delivery is not authentic (bad signature), or too old or too new (replay)."""


def _key(secret: str) -> bytes:
    raw = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError as e:
        raise WebhookVerificationError("the secret must be 'whsec_' followed by base64") from e
    if not key:
        raise WebhookVerificationError("the secret is empty")
    return key


def sign_webhook(secret: str, msg_id: str, timestamp: int, body: Union[str, bytes]) -> str:
    """The ``webhook-signature`` value modelux sends for this id, timestamp and body."""
    payload = body.decode() if isinstance(body, bytes) else body
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.{payload}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify_webhook(secret: str, headers: Mapping[str, str], body: Union[str, bytes], *, tolerance_s: int = 300,
                   now: Optional[float] = None) -> Any:
    """Checks the signature and the timestamp (within ``tolerance_s`` of ``now``) and returns the
    parsed JSON event ``{"type", "timestamp", "data"}``. Header names are case-insensitive."""
    h = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id, ts_text, sigs = h["webhook-id"], h["webhook-timestamp"], h["webhook-signature"]
    except KeyError as e:
        raise WebhookVerificationError(f"missing header {e.args[0]}") from None
    try:
        ts = int(ts_text)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a number of seconds") from None
    current = time.time() if now is None else now
    if ts < current - tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too old")
    if ts > current + tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too new")
    expected = sign_webhook(secret, msg_id, ts, body).split(",", 1)[1]
    for sig in sigs.split(" "):
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return json.loads(body)
    raise WebhookVerificationError("no matching signature")
