"""modelux.webhooks: the Standard Webhooks reference vector, tampering and replay windows."""

from __future__ import annotations

import pytest

from modelux.webhooks import WebhookVerificationError, sign_webhook, verify_webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TS = 1614265330
BODY = '{"test": 2432232314}'
SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def headers(sig: str = SIG, ts: int = TS) -> dict:
    return {"Webhook-Id": MSG, "Webhook-Timestamp": str(ts), "Webhook-Signature": sig}


def test_reference_vector() -> None:
    assert sign_webhook(SECRET, MSG, TS, BODY) == SIG
    assert verify_webhook(SECRET, headers(f"v1,bogus {SIG}"), BODY, now=TS + 10) == {"test": 2432232314}


@pytest.mark.parametrize("body,hdrs,now", [
    (BODY + " ", headers(), TS),                # body changed
    (BODY, headers("v1,AAAA"), TS),             # wrong signature
    (BODY, headers(), TS + 301),                # too old
    (BODY, headers(), TS - 301),                # too new
    (BODY, {"webhook-id": MSG}, TS),            # headers missing
])
def test_refuses(body: str, hdrs: dict, now: int) -> None:
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, hdrs, body, now=now)
