"""Benchmark: sealed Credentials created by one client, through webhook and ledger, to Ready.

The path a GitOps sync of Credentials takes, with everything on as shipped: each create passes
the credentials webhook and the audit webhook, which commits the change's ledger entry before
it admits it (fail closed); the operator (its ServiceAccount identity and RBAC, ledger on) then
opens the sealed value and writes the ciphertext Secret and the Credential's status.

One run, one local control plane, one PostgreSQL, one operator, one webhook:
  - baseline: the same client creates N ConfigMaps carrying the same sealed values in the same
    tenant namespace (a kind no webhook sees and no controller acts on), half before and half
    after the Credentials, so that drift in machine load hits both sides alike;
  - admission alone: N sealed Credentials created with the operator paused (SIGSTOP), so each
    create meets only the two webhooks, the ledger commit and storage: the ceiling the admission
    path sets; then the operator is resumed and drains that backlog (objects/s);
  - end to end: N more Credentials created with the operator running, creates/s and
    create->Ready p50/p99 (Ready as seen on a watch), and the time until the last is Ready.
Values are sealed before timing starts. Prints creates/s of each and the ratios against the
baseline, and what the end-to-end phase cost per Credential: apiserver requests (the client's
create, the operator's reads and writes) and CPU time of the apiserver, etcd, the operator and
the webhook, which the load of a shared machine does not move as it moves the ratio.
`--concurrency C` splits the creates over C connections of the same client (default 1: one
request at a time, as `kubectl apply` sends them).

    .venv/bin/python bench/bench_credentials.py [--credentials 200] [--concurrency 1] [--json]

With --json the figures go to standard output as one JSON object (the table to standard error):
{"baseline": {"creates_per_s"}, "admission": {"creates_per_s", "ratio", "operator_drain_per_s"},
 "credentials": {"creates_per_s", "ready_p50_s", "ready_p99_s", "all_ready_s",
 "requests_per_credential": {"VERB resource": n}, "cpu_ms_per_credential": {process: ms}},
 "ratio", ...}
("ratio": end to end against the baseline).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import signal
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO, cast

from kubernetes import client, watch

import apiserver_cost
from tenantry import kube
from tenantry.crypto import cli as crypto_cli
from tenantry.crypto import custody
from tenantry.devcluster.cluster import WEBHOOK_CLIENT_CN, LocalControlPlane
from tenantry.devcluster.devenv import (
    install_crds,
    ledger_options,
    migrate_databases,
    start_operator,
    start_webhook,
    wait_for_tenants,
)
from tenantry.devcluster.postgres import LocalPostgres
from tenantry.devcluster.process import ManagedProcess, wait_until
from tenantry.ledger import migrations
from tenantry.model import common
from tenantry.model import credential as credential_model

REPO_ROOT = Path(__file__).resolve().parent.parent
TENANT, NAMESPACE = "bench", "bench-creds"
OPERATOR_USER = "system:serviceaccount:tenantry-system:tenantry-operator"
OPERATOR_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:tenantry-system",
                   "system:authenticated")
FIELDS = ("token", "url")


class Client:
    """One keep-alive HTTPS connection to the apiserver as the cluster admin."""

    def __init__(self, plane: LocalControlPlane) -> None:
        context = ssl.create_default_context(cafile=str(plane.workdir / "ca.crt"))
        context.load_cert_chain(str(plane.workdir / "admin.crt"),
                                str(plane.workdir / "admin.key"))
        self.connection = http.client.HTTPSConnection("127.0.0.1", plane.port, context=context,
                                                      timeout=30)

    def create(self, path: str, body: bytes) -> None:
        self.connection.request("POST", path, body=body,
                                headers={"Content-Type": "application/json"})
        response = self.connection.getresponse()
        answer = response.read()
        if response.status != 201:
            raise RuntimeError(f"POST {path}: HTTP {response.status}: {answer[:300]!r}")

    def close(self) -> None:
        self.connection.close()


CREDENTIALS_PATH = (f"/apis/{common.GROUP}/{common.VERSION}/namespaces/{NAMESPACE}/"
                    f"{credential_model.PLURAL}")
CONFIGMAPS_PATH = f"/api/v1/namespaces/{NAMESPACE}/configmaps"


def sealed_credentials(sealing_key: Path, count: int) -> list[tuple[str, bytes]]:
    """(name, JSON body) of `count` Credentials, each value sealed to the operator's key."""
    public_key = custody.load_sealing_keys(sealing_key).primary.public_key()
    made = []
    for index in range(count):
        name = f"cred-{index:05d}"
        encrypted = crypto_cli.seal_values(public_key, NAMESPACE, name, {
            field: secrets.token_urlsafe(24).encode() for field in FIELDS})
        manifest = crypto_cli.credential_manifest(NAMESPACE, name, encrypted, scope="caller",
                                                  service_accounts=["app"])
        made.append((name, json.dumps(manifest).encode()))
    return made


def configmaps_like(credentials: Sequence[tuple[str, bytes]], prefix: str) -> list[bytes]:
    """ConfigMaps carrying the same sealed values, so both sides send bodies of one size."""
    bodies = []
    for index, (_, body) in enumerate(credentials):
        data = json.loads(body)["spec"]["sealed"]["encryptedData"]
        bodies.append(json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": f"{prefix}-{index:05d}",
                                               "namespace": NAMESPACE},
                                  "data": data}).encode())
    return bodies


def create_all(plane: LocalControlPlane, path: str, bodies: Sequence[bytes], concurrency: int,
               created: dict[int, float] | None = None) -> float:
    """POST every body, split over `concurrency` connections; seconds taken. `created` gets
    each body's send time by index."""
    clients = [Client(plane) for _ in range(concurrency)]
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for index in range(worker, len(bodies), concurrency):
                if created is not None:
                    created[index] = time.perf_counter()
                clients[worker].create(path, bodies[index])
        except BaseException as error:  # reported by the caller, in this thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for each in clients:
        each.close()
    if errors:
        raise RuntimeError(f"create failed: {errors[0]}")
    return elapsed


class ReadyWatch:
    """Watches the namespace's Credentials; the time each was first seen Ready=True."""

    def __init__(self, plane: LocalControlPlane, expected: Sequence[str]) -> None:
        self.ready: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self._expected = frozenset(expected)
        self._api = kube.api_client(plane.admin_kubeconfig)
        self._custom = client.CustomObjectsApi(self._api)
        self._done = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _seen(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if name not in self._expected:
            return
        for condition in (obj.get("status") or {}).get("conditions") or []:
            if condition["type"] != "Ready" or name in self.ready:
                continue
            if condition["status"] == "True":
                self.ready[name] = time.perf_counter()
            elif condition.get("reason") not in (None, "", "Pending", "Reconciling"):
                self.failed[name] = f"{condition.get('reason')}: {condition.get('message')}"
        if len(self.ready) >= len(self._expected):
            self._done.set()

    def _run(self) -> None:
        # A watch can end (timeout, compaction): list again and carry on from there.
        while not self._stop and not self._done.is_set():
            listed = cast(dict[str, Any], self._custom.list_namespaced_custom_object(
                common.GROUP, common.VERSION, NAMESPACE, credential_model.PLURAL))
            for obj in listed["items"]:
                self._seen(obj)
            stream = watch.Watch().stream(
                self._custom.list_namespaced_custom_object, common.GROUP, common.VERSION,
                NAMESPACE, credential_model.PLURAL,
                resource_version=listed["metadata"]["resourceVersion"], timeout_seconds=60)
            for event in stream:
                if event["type"] in ("ADDED", "MODIFIED"):
                    self._seen(event["object"])
                if self._stop or self._done.is_set():
                    break

    def wait(self, timeout: float) -> None:
        if not self._done.wait(timeout):
            sys.exit(f"only {len(self.ready)}/{len(self._expected)} Credentials became Ready "
                     f"within {timeout:.0f} s; failed: {dict(list(self.failed.items())[:3])}")

    def close(self) -> None:
        self._stop = True
        self._api.close()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def prepare(plane: LocalControlPlane, postgres: LocalPostgres, state: Path,
            count: int) -> tuple[list[ManagedProcess], Path]:
    """Schemas, CRDs, RBAC, keys; the operator (as its ServiceAccount) and the webhook, both on
    the ledger; a Ready tenant owning NAMESPACE. The processes and the sealing key file."""
    install_crds(plane.admin_kubeconfig)
    api = kube.api_client(plane.admin_kubeconfig)
    try:
        kube.apply(api, kube.load_manifests([REPO_ROOT / "manifests" / "namespace.yaml",
                                             REPO_ROOT / "manifests" / "operator" / "rbac.yaml"]))
    finally:
        api.close()
    dsn_files = migrate_databases(postgres, state)
    keys = crypto_cli.dev_operator_keys(plane.admin_kubeconfig, state)
    started: list[ManagedProcess] = []
    try:
        started.append(start_operator(plane.kubeconfig_for(OPERATOR_USER, OPERATOR_GROUPS),
                                      state, [*ledger_options(dsn_files, state), *keys]))
        started.append(start_webhook(
            plane.admin_kubeconfig, state,
            ["--ledger-dsn-file", str(dsn_files[migrations.LEDGER.name]),
             "--ledger-spool", str(state / "webhook-spool")],
            client_ca=plane.webhook_client_ca, client_cns=[WEBHOOK_CLIENT_CN]))
        api = kube.api_client(plane.admin_kubeconfig)
        try:
            kube.apply(api, [{"apiVersion": common.API_VERSION, "kind": "Tenant",
                              "metadata": {"name": TENANT},
                              "spec": {"members": [{"kind": "User", "name": "bench",
                                                    "role": "owner"}],
                                       "namespaces": [{"name": NAMESPACE}],
                                       # Room for every Secret and ConfigMap of the run.
                                       "quota": {"secrets": 3 * count + 100,
                                                 "configMaps": 2 * count + 100}}}])
        finally:
            api.close()
        wait_for_tenants(plane.admin_kubeconfig, [TENANT])
        probe = Client(plane)

        def enforcing() -> bool:
            # A Credential outside any tenant namespace is refused by the webhook (dry run).
            try:
                probe.create(CREDENTIALS_PATH.replace(NAMESPACE, "default") + "?dryRun=All",
                             sealed_credentials(state / crypto_cli.SEALING_KEY_FILE, 1)[0][1]
                             .replace(NAMESPACE.encode(), b"default"))
            except RuntimeError as error:
                return "credentials.admission.tenantry.dev" in str(error)
            return False

        wait_until(enforcing, timeout=60, what="the apiserver to call the webhook")
        probe.close()
    except BaseException:
        for process in reversed(started):
            process.stop()
        raise
    return started, state / crypto_cli.SEALING_KEY_FILE


def run(count: int, concurrency: int, out: TextIO) -> dict[str, Any]:
    with LocalControlPlane() as plane, LocalPostgres() as postgres, \
            tempfile.TemporaryDirectory(prefix="bench-credentials-") as state:
        processes, sealing_key = prepare(plane, postgres, Path(state), count)
        operator = processes[0]
        try:
            credentials = sealed_credentials(sealing_key, 2 * count)
            paused, running = credentials[:count], credentials[count:]
            before = configmaps_like(credentials[: count // 2], "before")
            after = configmaps_like(credentials[count // 2: count], "after")
            create_all(plane, CONFIGMAPS_PATH, configmaps_like(credentials[:20], "warm"),
                       concurrency)
            base_seconds = create_all(plane, CONFIGMAPS_PATH, before, concurrency)

            # Admission alone: the operator paused (SIGSTOP), so the creates meet only the
            # webhook, the ledger and storage; then it drains the backlog.
            backlog = ReadyWatch(plane, [name for name, _ in paused])
            backlog.start()
            os.kill(operator.pid, signal.SIGSTOP)
            try:
                admission_seconds = create_all(plane, CREDENTIALS_PATH,
                                               [body for _, body in paused], concurrency)
            finally:
                os.kill(operator.pid, signal.SIGCONT)
            resumed = time.perf_counter()
            backlog.wait(600)
            backlog.close()
            drain_seconds = max(backlog.ready.values()) - resumed

            # End to end, as a GitOps sync meets it: the operator working while creates arrive.
            ready = ReadyWatch(plane, [name for name, _ in running])
            ready.start()
            time.sleep(0.5)
            counters = kube.api_client(plane.admin_kubeconfig)
            requests_before = apiserver_cost.snapshot(counters)
            cpu = apiserver_cost.Cpu({
                **{p.name: p.pid for p in plane.processes()
                   if p.name in ("kube-apiserver", "etcd")},
                "operator": operator.pid, "webhook": processes[1].pid})
            created: dict[int, float] = {}
            started = time.perf_counter()
            cred_seconds = create_all(plane, CREDENTIALS_PATH, [body for _, body in running],
                                      concurrency, created)
            ready.wait(600)
            ready.close()
            requests_after = apiserver_cost.snapshot(counters)
            cpu_text, cpu_ms = cpu.describe(count), cpu.per_object(count)
            counters.close()
            last_ready = max(ready.ready.values()) - started
            base_seconds += create_all(plane, CONFIGMAPS_PATH, after, concurrency)
        finally:
            for process in reversed(processes):
                process.stop()
    latencies = [ready.ready[name] - created[index] for index, (name, _) in enumerate(running)]
    base_rate, cred_rate = count / base_seconds, count / cred_seconds
    admission_rate = count / admission_seconds
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    figures: dict[str, Any] = {
        "count": count, "concurrency": concurrency,
        "baseline": {"creates_per_s": base_rate},
        "admission": {"creates_per_s": admission_rate, "ratio": admission_rate / base_rate,
                      "operator_drain_per_s": count / drain_seconds},
        "credentials": {"creates_per_s": cred_rate, "ready_p50_s": p50, "ready_p99_s": p99,
                        "all_ready_s": last_ready,
                        "requests_per_credential": apiserver_cost.as_json(
                            requests_before, requests_after, count),
                        "cpu_ms_per_credential": cpu_ms},
        "ratio": cred_rate / base_rate,
    }
    print(f"{count} sealed Credentials, one client, {concurrency} connection(s), "
          "webhook + ledger on:", file=out)
    print(f"  baseline (ConfigMaps, no webhook):  {base_rate:7.1f} creates/s", file=out)
    print(f"  Credentials, operator paused:       {admission_rate:7.1f} creates/s   "
          f"ratio {admission_rate / base_rate:.2f}   (then drained at "
          f"{count / drain_seconds:.1f}/s)", file=out)
    print(f"  Credentials, operator running:      {cred_rate:7.1f} creates/s   "
          f"ratio {cred_rate / base_rate:.2f}", file=out)
    print(f"  create->Ready (operator running):   p50 {p50:.3f} s, p99 {p99:.3f} s; "
          f"all Ready after {last_ready:.1f} s", file=out)
    print("  apiserver requests per Credential (operator running):\n    " + apiserver_cost
          .describe(requests_before, requests_after, count).replace("\n", "\n    "),
          file=out)
    print(f"    {cpu_text}", file=out)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--credentials", type=int, default=200,
                        help="Credentials (and baseline ConfigMaps) to create (default 200)")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="connections the one client spreads its creates over (default 1)")
    parser.add_argument("--json", action="store_true",
                        help="print the figures as JSON on stdout (the table on stderr)")
    args = parser.parse_args()
    table = sys.stderr if args.json else sys.stdout
    figures = run(args.credentials, args.concurrency, table)
    if args.json:
        json.dump(figures, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
