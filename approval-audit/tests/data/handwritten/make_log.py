"""Writes handwritten.jsonl: an audit log made from AUDIT-FORMAT.md alone,
by a second implementation of the format (Python's hmac and json modules),
so the Rust verifier is tested on bytes it did not write itself.

JCS here is json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False): exact for these records because every member name is
ASCII (code-point order equals UTF-16 order) and every float below prints
the same in Python's repr and ECMAScript's Number::toString.

Run: python3 make_log.py  (rewrites handwritten.jsonl and handwritten.head)
"""
import hashlib
import hmac
import json

SECRET = bytes(range(32))
KEY_ID = "hand-1"
KEY2_ID = "hand-2"
SECRET2 = bytes(range(32, 64))


def record_key(secret):
    return hmac.new(secret, b"approval-audit/v1/record", hashlib.sha256).digest()


def digest_key(secret):
    return hmac.new(secret, b"approval-audit/v1/digest", hashlib.sha256).digest()


def jcs(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


args = {
    "table": "kunden_östliche_region",
    "limit": 2500,
    "ratio": 0.1,
    "threshold": -3.25,
    "huge": 1e21,
    "tiny": 1.5e300,
    "note": "Zoë\tMüller \u0007 東京 🔑 \"quoted\" back\\slash",
    "big_id": "9007199254740993",
    "token": {"redacted": hmac.new(digest_key(SECRET), jcs("s3cr3t"), hashlib.sha256).hexdigest()},
}
binding_args = dict(args, token="s3cr3t")
binding = hmac.new(
    digest_key(SECRET), jcs({"action": "crm::export", "args": binding_args}), hashlib.sha256
).hexdigest()

events = [
    {
        "event": "requested",
        "request_id": "01JDQ7Z8K0000000000000000A",
        "action": "crm::export",
        "policy": "data-export",
        "policy_digest": hashlib.sha256(b'{"name":"data-export"}').hexdigest(),
        "args": args,
        "skipped": ["progress"],
        "binding": binding,
        "actor": {"id": "agent-7", "kind": "agent", "model": "gpt-5", "on_behalf_of": "zoë@example.com"},
        "resource": "warehouse/kunden",
        "reason": "Quartalsbericht für Zoë",
    },
    {
        "event": "reviewed",
        "request_id": "01JDQ7Z8K0000000000000000A",
        "reviewer": {"id": "mock:ci", "display": "CI"},
        "vote": "approve",
        "channel": "mock",
        "comment": "ok 👍",
    },
    {
        "event": "approved",
        "request_id": "01JDQ7Z8K0000000000000000A",
        "policy": "data-export",
        "reviewers": [{"id": "mock:ci", "display": "CI"}],
    },
    {"event": "executed", "request_id": "01JDQ7Z8K0000000000000000A", "outcome": "ok"},
    {"event": "key_rotated", "next_key_id": KEY2_ID},
    {"event": "cancelled", "request_id": "01JDQ7Z8K0000000000000000B", "why": "shutdown"},
]

lines = []
prev = "0" * 64
for seq, event in enumerate(events):
    key_id, secret = (KEY_ID, SECRET) if seq <= 4 else (KEY2_ID, SECRET2)
    record = dict(event, v=1, seq=seq, ts="2026-11-24T09:41:%02d.%03dZ" % (seq, seq * 7), key_id=key_id, prev=prev)
    mac = hmac.new(record_key(secret), jcs(record), hashlib.sha256).hexdigest()
    record["mac"] = mac
    lines.append(jcs(record) + b"\n")
    prev = mac

with open("handwritten.jsonl", "wb") as f:
    f.writelines(lines)
with open("handwritten.head", "w") as f:
    f.write(prev + "\n")
with open("hand-1.key", "w") as f:
    f.write(SECRET.hex() + "\n")
with open("hand-2.key", "w") as f:
    f.write(SECRET2.hex() + "\n")
