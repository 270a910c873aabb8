"""Webhook endpoints through the typed client (``client.webhooks``) and the ``sparsegrad webhooks`` commands,
against the API served on a local port, with a test event delivered to a real receiver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_harness import Service, serving, start_service
from support.webhook_receiver import expected_signature, webhook_receiver
from typer.testing import CliRunner

from sparsegrad_cli.app import app
from sparsegrad_client import ApiError, SparseGradClient
from sparsegrad_service.webhooks import Outbox
from worker.webhooks import WebhookSender

runner = CliRunner()


@pytest.fixture()
def service(tmp_path: Path, db: str) -> Iterator[Service]:
    yield from start_service(tmp_path, db, webhooks_allow_private=True, webhooks_allow_http=True)


def test_the_client_and_the_cli_manage_endpoints_and_show_deliveries(service: Service) -> None:
    key = service.key("acme")
    with webhook_receiver() as receiver, serving(service.app) as base, SparseGradClient(base, key) as client:
        cli = ["--url", base, "--api-key", key]
        created = client.webhooks.create(receiver.url, ["fine_tuning.job.failed"], "ci")
        assert created.secret.startswith("whsec_") and created.events == ["fine_tuning.job.failed"]
        assert client.webhooks.get(created.id).description == "ci"
        with pytest.raises(ApiError) as refused:
            client.webhooks.create("ftp://127.0.0.1/x")
        assert refused.value.status == 400 and refused.value.param == "url"

        made = runner.invoke(app, ["webhooks", "create", receiver.url, "--event", "fine_tuning.job.cancelled", *cli])
        assert made.exit_code == 0, made.output
        secret = made.output.strip().splitlines()[-1]
        [other] = [w for w in client.webhooks.list().data if w.id != created.id]
        assert secret.startswith("whsec_") and other.events == ["fine_tuning.job.cancelled"]
        listed = runner.invoke(app, ["webhooks", "list", *cli])
        assert listed.exit_code == 0 and created.id in listed.output and other.id in listed.output

        tested = runner.invoke(app, ["webhooks", "test", other.id, *cli])
        assert tested.exit_code == 0 and "webhook.test" in tested.output, tested.output
        Outbox(service.settings).dispatch_due(WebhookSender(service.settings).deliver)
        [request] = receiver.requests
        assert request.headers["webhook-signature"] == expected_signature(secret, request)
        shown = runner.invoke(app, ["webhooks", "deliveries", other.id, *cli])
        assert shown.exit_code == 0 and "succeeded" in shown.output and "200" in shown.output, shown.output
        assert client.webhooks.deliveries(other.id).data[0].attempts[0].status_code == 200

        assert runner.invoke(app, ["webhooks", "delete", other.id, *cli]).exit_code == 0
        assert client.webhooks.delete(created.id).deleted and client.webhooks.list().data == []
        missing = runner.invoke(app, ["webhooks", "delete", created.id, *cli])
        assert missing.exit_code == 1 and "No webhook endpoint found" in missing.output
