"""A receiver for Herald's webhooks, as the documentation's Flask example should be written.

- verify over the raw body (request.get_data()), in constant time (hmac.compare_digest);
- the documented example forgot that the header may be missing: compare_digest(str, None) raises a TypeError;
- deduplicate on X-Webhook-Id: deliveries are at least once.
The documented signature covers the body only, not a timestamp, so it cannot give replay protection by time; for
that, verify the Standard Webhooks headers (see ../standard-webhooks), whose timestamp is signed.

    WEBHOOK_SECRET=… PORT=5000 python3 app.py        (pip install flask)
"""
import hashlib
import hmac
import json
import os
import sys

from flask import Flask, request

SECRET = os.environ.get("WEBHOOK_SECRET", "").encode()
if not SECRET:
    sys.exit("set WEBHOOK_SECRET to the config's secret")
seen = set()  # use a table with a unique key in production

app = Flask(__name__)


@app.route("/webhooks", methods=["POST"])
def webhook():
    given = request.headers.get("X-Webhook-Signature", "")
    computed = hmac.new(SECRET, request.get_data(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(computed, given):
        print("rejected: invalid signature", flush=True)
        return "Invalid signature", 401
    delivery = request.headers.get("X-Webhook-Id")
    if delivery in seen:
        return "OK (duplicate)", 200
    seen.add(delivery)
    payload = json.loads(request.get_data())
    print(f"accepted {payload['event']} {delivery} {json.dumps(payload['data'])}", flush=True)
    return "OK", 200


if __name__ == "__main__":
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "5000")))
