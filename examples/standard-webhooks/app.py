"""A receiver that verifies Herald's Standard Webhooks headers with the reference library.

webhook-signature signs "id.timestamp.body", so the library's 5-minute timestamp tolerance is real replay
protection. The library wants the secret as "whsec_" + base64 of the config's secret (its UTF-8 bytes).

    WEBHOOK_SECRET=… PORT=5001 python3 app.py        (pip install flask standardwebhooks)
"""
import base64
import json
import os
import sys

from flask import Flask, request
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = os.environ.get("WEBHOOK_SECRET", "")
if not SECRET:
    sys.exit("set WEBHOOK_SECRET to the config's secret")
verifier = Webhook("whsec_" + base64.b64encode(SECRET.encode()).decode())

app = Flask(__name__)


@app.route("/webhooks", methods=["POST"])
def webhook():
    try:
        payload = verifier.verify(request.get_data(), dict(request.headers))
    except WebhookVerificationError as error:
        print(f"rejected: {error}", flush=True)
        return "Invalid signature", 401
    print(f"accepted {payload['event']} {request.headers.get('webhook-id')} {json.dumps(payload['data'])}", flush=True)
    return "OK", 200


if __name__ == "__main__":
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "5001")))
