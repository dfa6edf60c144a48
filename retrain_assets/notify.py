"""Notifications of retraining triggers and failures: the log always, a webhook when configured.

The webhook receives ``POST`` with a JSON body ``{"text": ..., "event": {...}}``: the ``text`` field is
what Slack incoming webhooks display, and any other receiver gets the structured event too. Configure it
with ``RETRAIN_WEBHOOK_URL``. A notification that cannot be delivered is logged, never raised: alerting
must not break the retrain it reports on.
"""

import json
import logging
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlparse

logger = logging.getLogger("retrain_assets.notify")
WEBHOOK_ENV = "RETRAIN_WEBHOOK_URL"


class Notifier:
    def __init__(self, webhook_url: str | None = None, timeout_s: float = 5.0):
        self.webhook_url = webhook_url if webhook_url is not None else os.environ.get(WEBHOOK_ENV) or None
        self.timeout_s = timeout_s

    def notify(self, text: str, **event: Any) -> bool:
        """Log ``text`` and deliver it to the webhook; True when delivered (or no webhook is set)."""
        logger.warning("retrain-assets: %s", text)
        if not self.webhook_url:
            return True
        scheme = urlparse(self.webhook_url).scheme
        if scheme not in ("http", "https"):  # file://, ftp://...: never opened, whatever the URL says
            logger.error("retrain-assets: %s must be an http:// or https:// URL, not %s://: notification not delivered",
                         WEBHOOK_ENV, scheme or "(no scheme)")
            return False
        body = json.dumps({"text": text, "event": event}, default=str).encode()
        request = urllib.request.Request(
            self.webhook_url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return 200 <= response.status < 300
        except (urllib.error.URLError, OSError, ValueError) as error:
            logger.error("retrain-assets: could not deliver a notification to the webhook: %s", error)
            return False
