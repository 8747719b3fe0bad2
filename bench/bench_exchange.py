"""Benchmark credential exchange: a workload's ServiceAccount token for a Credential's value.

One run starts its own PostgreSQL and local control plane, puts one Tenant, namespace,
ServiceAccount and encrypted Credential in place the way the operator leaves them (ciphertext
Secret of envelopes under the tenant's key, status pointing at it), and serves the real
`tenantry api run` with the ledger on and a keyring file. A TokenRequest mints the projected
token (audience `tenantry-api`). Measured, against baselines of the same run:

- **the limit**: decrypting the same envelopes in-process (`api.exchange.open_fields`, the code
  the API runs), per second;
- **through the API, TokenReview cache on**: exchanges/s at fixed concurrency (closed loop) and
  p50/p99 at a fixed rate (`--rate`, default 200/s, open loop), against the goal of p99 < 10 ms;
- **cache off** (a second server with `--no-token-review-cache`: one TokenReview per exchange):
  exchanges/s, to show what the cache saves the apiserver and the caller.

Usage: ``.venv/bin/python bench/bench_exchange.py [--seconds S] [--concurrency C] [--rate R]
[--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO, cast

from kubernetes import client

from bench_api import closed_loop, open_loop, ops_per_second, ready
from tenantry import kube
from tenantry.api import exchange
from tenantry.api.tokens import rfc7517
from tenantry.controller.credential import ciphertext
from tenantry.controller.credential.plaintext import Plaintext
from tenantry.crypto import keyring
from tenantry.devcluster.cluster import LocalControlPlane
from tenantry.devcluster.devenv import install_crds, migrate_databases
from tenantry.devcluster.postgres import LocalPostgres
from tenantry.devcluster.process import ManagedProcess, free_port, wait_until
from tenantry.ledger import migrations
from tenantry.model import common

TENANT, NAMESPACE, ACCOUNT, CREDENTIAL = "bench", "bench-x", "app", "db"
VALUES = {"username": b"svc-bench", "password": os.urandom(24).hex().encode()}
GOAL_P99_MS = 10.0
GROUP, VERSION = common.GROUP, common.VERSION


def prepare(plane: LocalControlPlane, ring: keyring.Keyring) -> tuple[str, dict[str, Any],
                                                                       dict[str, Any], str]:
    """The Tenant, namespace, ServiceAccount and encrypted Credential; (token, Credential,
    Secret, tenant UID)."""
    api = kube.api_client(plane.admin_kubeconfig)
    try:
        custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        tenant = custom.create_cluster_custom_object(GROUP, VERSION, "tenants", {
            "apiVersion": common.API_VERSION, "kind": "Tenant", "metadata": {"name": TENANT},
            "spec": {"members": [{"kind": "User", "name": "o@acme.example", "role": "owner"}],
                     "namespaces": [{"name": NAMESPACE}]}})
        tenant_uid = str(cast(dict[str, Any], tenant)["metadata"]["uid"])
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
            name=NAMESPACE, labels={common.TENANT_LABEL: TENANT})))
        core.create_namespaced_service_account(NAMESPACE, client.V1ServiceAccount(
            metadata=client.V1ObjectMeta(name=ACCOUNT)))
        created = custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "credentials", {
            "apiVersion": common.API_VERSION, "kind": "Credential",
            "metadata": {"name": CREDENTIAL, "namespace": NAMESPACE},
            "spec": {"scope": "caller", "allowedServiceAccounts": [ACCOUNT],
                     "sealed": {"encryptedData": {"password": "A" * 16}}}})
        owner = ciphertext.Owner(NAMESPACE, CREDENTIAL,
                                 str(cast(dict[str, Any], created)["metadata"]["uid"]))
        sealed = ciphertext.encrypt(ring, owner, tenant_uid, 1,
                                    {k: Plaintext(v) for k, v in VALUES.items()})
        secret = ciphertext.manifest(owner, ciphertext.TenantRef(TENANT, tenant_uid), sealed,
                                     ciphertext.SEALED_SOURCE)
        kube.apply(api, [secret])
        obj = cast(dict[str, Any], custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, NAMESPACE, "credentials", CREDENTIAL, {"status": {
                "secretRef": {"name": secret["metadata"]["name"], "keyId": sealed.key_id},
                "encryptionGeneration": 1, "keys": sorted(VALUES)}}))
        answer = core.create_namespaced_service_account_token(
            ACCOUNT, NAMESPACE, client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=["tenantry-api"],
                                               expiration_seconds=3600)))
        assert answer.status is not None
        return str(answer.status.token), obj, secret, tenant_uid
    finally:
        api.close()


def start_api(state: Path, dsn_files: dict[str, Path], kubeconfig: Path, key_file: Path,
              keyring_file: Path, *extra: str) -> tuple[ManagedProcess, int]:
    port = free_port()
    process = ManagedProcess(
        f"api-{port}",
        [sys.executable, "-m", "tenantry", "api", "run",
         "--dsn-file", str(dsn_files["api"]), "--signing-key-file", str(key_file),
         "--listen", f"127.0.0.1:{port}", "--kubeconfig", str(kubeconfig),
         "--ledger-dsn-file", str(dsn_files[migrations.LEDGER.name]),
         "--ledger-spool", str(state / f"spool-{port}"), "--keyring", str(keyring_file),
         "--exchange-rate-limit", "1000000/s", *extra],
        state / f"api-{port}.log")
    wait_until(lambda: ready(port), timeout=60, what="the API's /readyz", process=process)
    return process, port


def exchange_request(token: str) -> bytes:
    body = json.dumps({"namespace": NAMESPACE, "name": CREDENTIAL}).encode()
    return (f"POST /v1/credentials/exchange HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def through(port: int, raw: bytes, args: argparse.Namespace,
                  pid: int) -> dict[str, Any]:
    closed = await closed_loop(port, {"exchange": raw}, args.concurrency, args.seconds,
                               blocks=2, pid=pid)
    paced = await open_loop(port, raw, args.rate, args.seconds)
    return {"closed": closed["exchange"], "fixed_rate": paced}


def run(args: argparse.Namespace, out: TextIO) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="bench-exchange-"))
    key_file = state / "signing.pem"
    rfc7517.write_private_key(rfc7517.generate(), key_file)
    ring = keyring.generate()
    keyring_file = state / "keyring.json"
    keyring_file.write_text(keyring.dumps(ring))
    keyring_file.chmod(0o600)
    figures: dict[str, Any] = {"concurrency": args.concurrency, "rate": args.rate,
                               "seconds": args.seconds, "cpus": os.cpu_count()}
    with LocalPostgres() as postgres, LocalControlPlane() as plane:
        install_crds(plane.admin_kubeconfig)
        dsn_files = migrate_databases(postgres, state)
        token, obj, secret, tenant_uid = prepare(plane, ring)
        in_process = ops_per_second(
            lambda: exchange.open_fields(ring, obj, secret, tenant_uid, None), args.seconds)
        figures["in_process_per_second"] = in_process
        raw = exchange_request(token)
        for name, extra in (("cache_on", ()), ("cache_off", ("--no-token-review-cache",))):
            process, port = start_api(state, dsn_files, plane.admin_kubeconfig, key_file,
                                      keyring_file, *extra)
            try:
                figures[name] = asyncio.run(through(port, raw, args, process.pid))
            finally:
                process.stop()
    on, off = figures["cache_on"], figures["cache_off"]
    ratio = on["closed"]["rate"] / in_process
    figures["ratio_cache_on"] = ratio
    figures["ratio_cache_off"] = off["closed"]["rate"] / in_process
    print(f"credential exchange benchmark - {os.cpu_count()} cpus, one API process\n"
          f"  in process (decrypt the same envelopes, the limit)  {in_process:9.0f} /s\n"
          f"  through the API, TokenReview cache on, {args.concurrency} clients "
          f"{on['closed']['rate']:8.0f} /s   p50 {on['closed']['p50_ms']:.2f} ms   "
          f"p99 {on['closed']['p99_ms']:.2f} ms   ratio {ratio:.3f}\n"
          f"  through the API, cache off (a TokenReview each)  "
          f"{off['closed']['rate']:8.0f} /s   p50 {off['closed']['p50_ms']:.2f} ms   "
          f"p99 {off['closed']['p99_ms']:.2f} ms   ratio {figures['ratio_cache_off']:.3f}\n"
          f"  at a fixed {args.rate:g}/s, cache on: p50 {on['fixed_rate']['p50_ms']:.2f} ms, "
          f"p99 {on['fixed_rate']['p99_ms']:.2f} ms "
          f"({on['fixed_rate']['rate']:.0f}/s achieved; goal p99 < {GOAL_P99_MS} ms: "
          f"{'met' if on['fixed_rate']['p99_ms'] < GOAL_P99_MS else 'MISSED'})\n"
          f"  at a fixed {args.rate:g}/s, cache off: p99 {off['fixed_rate']['p99_ms']:.2f} ms",
          file=out)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--json", action="store_true",
                        help="print the figures as JSON on stdout (the table on stderr)")
    args = parser.parse_args()
    started = time.perf_counter()
    out = sys.stderr if args.json else sys.stdout
    figures = run(args, out)
    figures["total_seconds"] = time.perf_counter() - started
    print(f"total {figures['total_seconds']:.1f} s", file=out)
    if args.json:
        json.dump(figures, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
