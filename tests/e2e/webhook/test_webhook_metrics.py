"""The webhook's /metrics: parsed with prometheus_client's parser, numbers that move with what
happened (a refused pod raises its rule's violation counter), and no names in labels."""

from __future__ import annotations

import json
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Ledger
from tests.e2e.webhook.conftest import RawApi
from tests.e2e.webhook.test_webhook import ROOT_FS, hardened, writable_root
from tests.e2e.webhook.webhook_helpers import WebhookProcess, deployment
from tests.helpers import eventually, unique
from tests.unit.admission.admission_helpers import hardened_pod

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(webhook: WebhookProcess) -> tuple[Samples, str]:
    with urllib.request.urlopen(f"{webhook.url}/metrics", timeout=5,  # noqa: S310
                                context=webhook.ssl_context()) as response:
        text = response.read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return samples, text


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (sample, found), value in samples.items()
               if sample == name and wanted <= set(found))


def test_a_refused_pod_moves_the_review_decision_and_rule_counters(
        raw_api: RawApi, acme: str, webhook: WebhookProcess) -> None:
    before, _ = scrape(webhook)
    name = unique("metrics")
    refused = raw_api.create(deployment(writable_root(hardened_pod()), acme, name),
                             dry_run=False)
    assert refused.status == 403, refused
    admitted = raw_api.create(hardened(acme, unique("metrics-ok")), dry_run=False)
    assert admitted.status == 201, admitted
    after, text = scrape(webhook)
    assert total(after, "tenantry_webhook_violations_total", rule=ROOT_FS) \
        - total(before, "tenantry_webhook_violations_total", rule=ROOT_FS) >= 1
    assert total(after, "tenantry_webhook_decisions_total", verdict="denied") \
        > total(before, "tenantry_webhook_decisions_total", verdict="denied")
    assert total(after, "tenantry_webhook_reviews_total", verdict="allowed") \
        > total(before, "tenantry_webhook_reviews_total", verdict="allowed")
    assert total(after, "tenantry_webhook_review_duration_seconds_count") \
        > total(before, "tenantry_webhook_review_duration_seconds_count")
    expiry = total(after, "tenantry_webhook_certificate_expiry_timestamp_seconds")
    assert expiry > time.time() + 3600
    # Bounded labels: no namespace, tenant or object name.
    for name_seen in (acme, name):
        assert name_seen not in text


def test_the_review_uid_names_the_request_in_the_webhook_log_and_the_ledger(
        raw_api: RawApi, acme: str, ledger: Ledger, webhook: WebhookProcess) -> None:
    name = unique("corr")
    refused = raw_api.create(deployment(writable_root(hardened_pod()), acme, name),
                             dry_run=False)
    assert refused.status == 403, refused
    entry = eventually(lambda: next((e for e in ledger.entries("wh-acme")
                                     if e["action"] == "admission.deny"
                                     and e["resource_name"] == name), None),
                       what="the refusal's ledger entry")
    uid = entry["request_id"]
    assert uid
    lines = [json.loads(line) for line in webhook.log().splitlines() if uid in line]
    assert lines and all(line.get("request_id") == uid for line in lines)
