"""Webhook workers: a Celery application of their own (no torch, no training task) whose task makes one attempt of
a delivery, and the outbox relay that queues the deliveries that are due.

Start one (``sparsegrad up`` does; several may run, on any machine with the database and the broker)::

    celery -A worker.webhooks worker -Q webhooks --pool threads -c 8 \\
        --without-gossip --without-mingle --without-heartbeat

(``-Q`` takes ``Settings.webhook_queue``.) Each worker's relay polls the outbox every ``webhook_poll_s`` and
queues a task per due delivery; the schedule (first attempt, backoff, the attempt count) lives in SQL
(:class:`~sparsegrad_service.webhooks.Outbox`), so a lost message or a dead worker delays a delivery but never
drops it, and a duplicate message finds nothing to claim. An attempt is a POST of the stored body, signed for
this attempt's timestamp, to the address checked just before it, without following redirects; only 2xx is
success, and only the first characters of the answer are kept.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
from celery.signals import worker_ready, worker_shutdown

from sparsegrad_service.models import utcnow
from sparsegrad_service.periodic import PeriodicThread
from sparsegrad_service.queue import DELIVER_WEBHOOK_TASK, make_celery
from sparsegrad_service.schemas.webhooks import sign_webhook
from sparsegrad_service.settings import Settings, get_settings
from sparsegrad_service.webhooks import (
    EXCERPT_CHARS,
    AttemptResult,
    Claim,
    Outbox,
    Resolver,
    WebhookUrlError,
    check_url,
    resolve,
)

log = logging.getLogger("sparsegrad.webhooks")

app = make_celery(get_settings())
USER_AGENT = "sparsegrad-webhooks/1"


class WebhookSender:
    """Makes the attempts of deliveries (the Celery task's work)."""

    def __init__(self, settings: Settings, resolver: Resolver = resolve) -> None:
        self.settings, self.resolver = settings, resolver
        self.outbox = Outbox(settings)

    def deliver(self, delivery_id: str) -> str:
        """One attempt of delivery ``delivery_id`` if it is due; what it left: ``succeeded``, ``pending`` (a retry
        is scheduled), ``failed``, ``gone`` (its endpoint was deleted meanwhile) or ``skipped`` (nothing to do)."""
        claim = self.outbox.claim(delivery_id)
        if claim is None:
            return "skipped"
        result = self.attempt(claim)
        outcome = self.outbox.record(claim, result)
        log.info("webhook delivery %s attempt %d: %s -> %s", delivery_id, claim.attempt,
                 result.error or result.status_code, outcome)
        return outcome

    def attempt(self, claim: Claim) -> AttemptResult:
        """POST ``claim``'s event to its endpoint once (module docstring); what happened."""
        started, t0 = utcnow(), time.monotonic()

        def result(**values: Any) -> AttemptResult:
            return AttemptResult(started, int((time.monotonic() - t0) * 1000), **values)

        try:
            target = check_url(claim.url, self.settings, self.resolver)
        except WebhookUrlError as exc:
            return result(error=f"refused: {exc}"[:EXCERPT_CHARS])
        body, timestamp = claim.payload.encode(), int(time.time())
        headers = {"Host": target.host_header, "Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "webhook-id": claim.event_id, "webhook-timestamp": str(timestamp),
                   "webhook-signature": sign_webhook(claim.secret, claim.event_id, timestamp, body)}
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            with httpx.Client(timeout=self.settings.webhook_timeout_s, follow_redirects=False,
                              trust_env=False) as http:
                request = http.build_request("POST", target.pinned_url, content=body, headers=headers,
                                             extensions=extensions)
                response = http.send(request, stream=True)
                try:
                    excerpt = read_excerpt(response, t0 + self.settings.webhook_timeout_s)
                finally:
                    response.close()
        except httpx.HTTPError as exc:
            return result(error=(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)[:EXCERPT_CHARS])
        code = response.status_code
        error = None if 200 <= code < 300 else (
            f"HTTP {code} (redirects are not followed)" if 300 <= code < 400 else f"HTTP {code}")
        return result(status_code=code, error=error, response_excerpt=excerpt)


def read_excerpt(response: httpx.Response, deadline: float) -> str | None:
    """The first ``EXCERPT_CHARS`` characters of the body, as much of them as came before ``deadline``
    (``time.monotonic()``); the rest is not read, so a body that trickles in cannot hold the attempt."""
    data = b""
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) >= 4 * EXCERPT_CHARS or time.monotonic() > deadline:
            break
    return data.decode("utf-8", "replace")[:EXCERPT_CHARS] or None


PRUNE_EVERY_S = 3600.0
"""How often a relay deletes old finished deliveries."""


class OutboxRelay(PeriodicThread):
    """A thread that queues due deliveries every ``webhook_poll_s`` (several relays may run: each row is taken
    by one of them)."""

    name = "sparsegrad-webhook-relay"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.webhook_poll_s)
        self.settings, self.outbox = settings, Outbox(settings)
        self._pruned_at: float | None = None

    def send(self, delivery_id: str) -> None:
        app.send_task(DELIVER_WEBHOOK_TASK, args=[delivery_id], queue=self.settings.webhook_queue)

    def run_once(self) -> list[str]:
        try:
            self.prune_when_due()
            return self.outbox.dispatch_due(self.send)
        except Exception:
            log.exception("webhook relay pass failed; retrying in %.1f s", self.settings.webhook_poll_s)
            return []

    def prune_when_due(self) -> None:
        """Sweep old finished deliveries (``Outbox.prune``) at most every ``PRUNE_EVERY_S``."""
        if self._pruned_at is not None and time.monotonic() - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = time.monotonic()
        pruned = self.outbox.prune()
        if pruned:
            log.info("deleted %d webhook deliveries finished more than %g days ago", pruned,
                     self.settings.webhook_retention_days)


@app.task(name=DELIVER_WEBHOOK_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True, max_retries=0)
def deliver_webhook(delivery_id: str) -> str:
    """One attempt of delivery ``delivery_id`` (retries are scheduled in SQL and queued by the relay)."""
    return WebhookSender(get_settings()).deliver(delivery_id)


_relays: list[OutboxRelay] = []


@worker_ready.connect
def _start_relay(sender: Any = None, **_: Any) -> None:
    if getattr(sender, "app", None) is app and not _relays:
        _relays.append(OutboxRelay(get_settings()))
        _relays[0].start()


@worker_shutdown.connect
def _stop_relay(**_: Any) -> None:
    while _relays:
        _relays.pop().stop()
