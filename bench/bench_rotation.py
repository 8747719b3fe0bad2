"""Benchmark: Credentials re-encrypted per second by a rotation, against the apiserver's own limit.

One run, one local control plane, the operator as shipped (audit ledger on):
  1. setup: N sealed Credentials in one tenant namespace, encrypted by the operator;
  2. baseline: N Secrets of the same size server-side applied directly with one async client
     (25 at a time, the rotation's batch size): what the apiserver takes from a perfect client;
     half before the rotation and half after, so that drift in machine load (other work on a
     shared machine) hits both sides alike;
  3. rotation: a new master key version is added and promoted in the operator's keyring file,
     then a RotationPolicy (target Credentials) is triggered; the time from the trigger to
     Ready=True RotationSucceeded. Each Credential goes through the Credential controller's own
     reconcile (verify the Secret as last written, from memory while its watch has seen no other
     version; encrypt; apply bound to that version; status; ledger entry; the Event is one per
     batch, on the policy), which is what the ratio prices.
  4. floor: with the operator paused (SIGSTOP), the same client sends, for each Credential, the
     two writes the design requires of a re-encryption (a ciphertext Secret of the same shape,
     and a status patch of the Credential, since `status.secretRef.keyId` names the key): the
     best any operator could do on this apiserver, printed as a second ratio. The issue's
     ratio is against one Secret write per Credential; the status write is a custom-resource
     update, which costs the apiserver two to three times as much CPU as the Secret (printed).
Throughout all of them a reader decrypts every Credential's ciphertext Secret, round after
round, with the keyring file (as a consumer of the mounted keyring does), so all compete with the
same read load; it counts failed reads, which must be 0 (the bench exits 1 otherwise). The
apiserver's request counters say what the rotation sent per Credential (writes; the reads
include the reader's two per read), and the CPU time of the apiserver, etcd and the operator
what each phase cost per object, which the load of a shared machine does not move as it moves
the ratio.

    .venv/bin/python bench/bench_rotation.py [--credentials 1000] [--json]

`--credentials 10000` is the large option (about ten times as long). With --json the figures go
to standard output as one JSON object (the table to standard error): {"credentials",
"baseline": {"secrets_per_s"}, "rotation": {"reencrypted_per_s", "seconds",
"requests_per_credential": {"VERB resource": n}, "cpu_ms_per_credential": {process: ms}},
"ratio", "floor": {"credentials_per_s", "cpu_ms_per_credential"}, "ratio_to_floor",
"reader": {"reads", "reads_during_rotation", "failed"}} (the baseline also has
"cpu_ms_per_secret").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, cast

from kubernetes import client

import apiserver_cost
from tenantry import kube
from tenantry.controller.credential import ciphertext
from tenantry.crypto import cli as crypto_cli
from tenantry.crypto import custody, keyring
from tenantry.devcluster.cluster import LocalControlPlane
from tenantry.devcluster.devenv import install_crds, prepare_ledger, start_operator
from tenantry.devcluster.postgres import LocalPostgres
from tenantry.kubeapi import KubeApi

GROUP, VERSION = "tenantry.dev", "v1alpha1"
TENANT = "bench-rotation"
BASELINE_NAMESPACE = "bench-rotation-direct"
CONCURRENCY = 25
REPO_ROOT = Path(__file__).resolve().parents[1]


def _wait(check: Any, what: str, timeout: float = 900.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    sys.exit(f"timed out after {timeout:.0f} s waiting for {what}")


def setup(api: client.ApiClient, count: int) -> tuple[dict[str, Any], dict[str, str]]:
    """The tenant and its N sealed Credentials, all Encrypted; (tenant, name -> value)."""
    custom = client.CustomObjectsApi(api)
    custom.create_cluster_custom_object(GROUP, VERSION, "tenants", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": TENANT},
        "spec": {"members": [{"kind": "User", "name": "owner", "role": "owner"}],
                 "namespaces": [{"name": TENANT}], "quota": {"secrets": count + 50}}})

    def tenant_ready() -> dict[str, Any] | None:
        found = cast(dict[str, Any], custom.get_cluster_custom_object(
            GROUP, VERSION, "tenants", TENANT))
        conditions = (found.get("status") or {}).get("conditions") or []
        return found if any(c["type"] == "Ready" and c["status"] == "True"
                            for c in conditions) else None

    tenant = _wait(tenant_ready, "the tenant")
    configmap = _wait(lambda: _public_key(api), "the sealing public key")
    public_key = custody.public_key_from_configmap(configmap)
    values = {f"cred-{n:05d}": f"bench-value-{n:05d}-" + "x" * 40 for n in range(count)}
    for name, value in values.items():
        sealed = crypto_cli.seal_values(public_key, TENANT, name, {"token": value.encode()})
        custom.create_namespaced_custom_object(GROUP, VERSION, TENANT, "credentials", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Credential",
            "metadata": {"name": name, "namespace": TENANT},
            "spec": {"scope": "caller", "allowedServiceAccounts": ["app"],
                     "sealed": {"encryptedData": sealed}}})
    _wait(lambda: _encrypted(custom) >= count, f"{count} Credentials to be encrypted")
    return tenant, values


def _public_key(api: client.ApiClient) -> dict[str, Any] | None:
    try:
        return cast(dict[str, Any], api.sanitize_for_serialization(
            client.CoreV1Api(api).read_namespaced_config_map(custody.PUBLIC_KEY_CONFIGMAP,
                                                             "tenantry-system")))
    except client.ApiException:
        return None


def _encrypted(custom: client.CustomObjectsApi, version: str | None = None) -> int:
    listed = cast(dict[str, Any], custom.list_namespaced_custom_object(
        GROUP, VERSION, TENANT, "credentials"))
    return sum(1 for c in listed["items"]
               if ((c.get("status") or {}).get("secretRef") or {}).get("keyId")
               and (version is None or c["status"]["secretRef"]["keyId"].startswith(
                   f"{version}.")))


async def baseline(kubeconfig: Path, template: dict[str, str], count: int,
                   first: int = 0) -> float:
    """Seconds to server-side apply N Secrets like the ciphertext ones, 25 at a time (named
    from `first` on)."""
    api = await KubeApi.from_kubeconfig(str(kubeconfig))
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(index: int) -> None:
        async with limit:
            await api.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                             "metadata": {"name": f"direct-{index:05d}",
                                          "namespace": BASELINE_NAMESPACE},
                             "data": template})

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(first, first + count)))
    elapsed = time.perf_counter() - started
    await api.close()
    return elapsed


async def floor(kubeconfig: Path, template: dict[str, str], names: list[str]) -> float:
    """Seconds to send, 25 at a time, each Credential's two required writes directly: an
    apply of a Secret like its ciphertext one (a new value), and a status merge patch (a new
    `lastEncryptedTime`, the field a re-encryption moves besides the key id)."""
    api = await KubeApi.from_kubeconfig(str(kubeconfig))
    limit = asyncio.Semaphore(CONCURRENCY)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    async def one(index: int, name: str) -> None:
        async with limit:
            await api.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                             "metadata": {"name": f"floor-{index:05d}",
                                          "namespace": BASELINE_NAMESPACE,
                                          "labels": {"app.kubernetes.io/managed-by": "bench"},
                                          "annotations": {"bench/key-id": "v3"}},
                             "data": template})
            await api.merge_patch(f"{GROUP}/{VERSION}", "Credential", name,
                                  {"status": {"lastEncryptedTime": stamp}}, namespace=TENANT,
                                  subresource="status")

    started = time.perf_counter()
    await asyncio.gather(*(one(i, name) for i, name in enumerate(names)))
    elapsed = time.perf_counter() - started
    await api.close()
    return elapsed


class Reader(threading.Thread):
    """Decrypts every Credential's ciphertext Secret, round after round; counts failures."""

    def __init__(self, kubeconfig: Path, ring_path: Path, tenant: dict[str, Any],
                 values: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.api = kube.api_client(kubeconfig)
        self.ring_path, self.values = ring_path, values
        self.tenant = ciphertext.TenantRef(TENANT, tenant["metadata"]["uid"])
        self.stop = threading.Event()
        self.reads = self.failed = 0
        self.first_failures: list[str] = []

    def _read(self, name: str) -> None:
        custom = client.CustomObjectsApi(self.api)
        obj = cast(dict[str, Any], custom.get_namespaced_custom_object(
            GROUP, VERSION, TENANT, "credentials", name))
        status = obj.get("status") or {}
        secret = client.CoreV1Api(self.api).read_namespaced_secret(
            ciphertext.secret_name(name), TENANT)
        verdict = ciphertext.verify(
            self.api.sanitize_for_serialization(secret), ring=keyring.load(self.ring_path),
            owner=ciphertext.Owner(TENANT, name, obj["metadata"]["uid"]), tenant=self.tenant,
            status_generation=status.get("encryptionGeneration"),
            expected_fields=status.get("keys") or ())
        if verdict.stored is None or \
                verdict.stored.fields["token"].reveal() != self.values[name].encode():
            raise AssertionError(f"{verdict.state}: {verdict.detail}")

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                for name in self.values:
                    if self.stop.is_set():
                        break
                    self.reads += 1
                    try:
                        self._read(name)
                    except Exception as error:  # every failed read counts
                        self.failed += 1
                        if len(self.first_failures) < 5:
                            self.first_failures.append(f"{name}: {type(error).__name__}")
        finally:
            self.api.close()


def rotate(api: client.ApiClient, ring_path: Path, count: int) -> tuple[float, str]:
    """Add and promote a version in the operator's keyring file, trigger a rotation; seconds
    from the trigger to RotationSucceeded, and the new version."""
    subprocess.run([sys.executable, "-m", "tenantry", "keyring", "add-version", "--keyring",
                    str(ring_path), "--promote"], check=True, capture_output=True)
    new = keyring.load(ring_path).primary
    custom = client.CustomObjectsApi(api)
    started = time.perf_counter()
    custom.create_namespaced_custom_object(GROUP, VERSION, TENANT, "rotationpolicies", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RotationPolicy",
        "metadata": {"name": "bench", "namespace": TENANT},
        "spec": {"targets": ["Credentials"], "trigger": "bench"}})

    def succeeded() -> bool:
        policy = cast(dict[str, Any], custom.get_namespaced_custom_object(
            GROUP, VERSION, TENANT, "rotationpolicies", "bench"))
        return any(c["type"] == "Ready" and c["status"] == "True"
                   and c["reason"] == "RotationSucceeded"
                   for c in (policy.get("status") or {}).get("conditions") or [])

    _wait(succeeded, "the rotation", timeout=60 + count, interval=0.1)
    elapsed = time.perf_counter() - started
    if (done := _encrypted(custom, new)) != count:
        sys.exit(f"rotation reported success with {done}/{count} Credentials under {new}")
    return elapsed, new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--credentials", type=int, default=1000)
    parser.add_argument("--json", action="store_true",
                        help="print the figures as JSON on stdout (the table on stderr)")
    args = parser.parse_args()
    out = sys.stderr if args.json else sys.stdout
    count = args.credentials
    with LocalControlPlane() as plane, LocalPostgres() as postgres:
        install_crds(plane.admin_kubeconfig)
        namespace_api = kube.api_client(plane.admin_kubeconfig)
        try:  # the operator's namespace, where it publishes the sealing public key
            kube.apply(namespace_api, kube.load_manifests([REPO_ROOT / "manifests" /
                                                           "namespace.yaml"]))
        finally:
            namespace_api.close()
        state = Path(tempfile.mkdtemp())
        keys = crypto_cli.dev_key_files(state)
        ring_path = Path(keys[keys.index("--keyring") + 1])
        operator = start_operator(plane.admin_kubeconfig, state,
                                  [*prepare_ledger(postgres, state), *keys])
        api = kube.api_client(plane.admin_kubeconfig)
        try:
            tenant, values = setup(api, count)
            client.CoreV1Api(api).create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=BASELINE_NAMESPACE)))
            sample = client.CoreV1Api(api).read_namespaced_secret(
                ciphertext.secret_name(next(iter(values))), TENANT)
            # The reader runs through both, so both compete with the same read load.
            reader = Reader(plane.admin_kubeconfig, ring_path, tenant, values)
            reader.start()
            try:
                template = {key: str(value) for key, value in (sample.data or {}).items()}
                half = count // 2
                pids = {**{p.name: p.pid for p in plane.processes()
                           if p.name in ("kube-apiserver", "etcd")}, "operator": operator.pid}
                base_cpu = apiserver_cost.Cpu(pids)
                base_seconds = asyncio.run(baseline(plane.admin_kubeconfig, template, half))
                base_cpu_ms = base_cpu.per_object(half)
                rotation_reads = reader.reads
                requests_before = apiserver_cost.snapshot(api)
                rotation_cpu = apiserver_cost.Cpu(pids)
                rotation_seconds, new = rotate(api, ring_path, count)
                rotation_cpu_text = rotation_cpu.describe(count)
                rotation_cpu_ms = rotation_cpu.per_object(count)
                requests_after = apiserver_cost.snapshot(api)
                rotation_reads = reader.reads - rotation_reads
                base_cpu = apiserver_cost.Cpu(pids)
                base_seconds += asyncio.run(baseline(plane.admin_kubeconfig, template,
                                                     count - half, first=half))
                base_cpu_ms = {name: (ms + base_cpu.per_object(count - half)[name]) / 2
                               for name, ms in base_cpu_ms.items()}
                # Paused, the operator neither competes nor answers the status writes.
                os.kill(operator.pid, signal.SIGSTOP)
                try:
                    floor_cpu = apiserver_cost.Cpu(pids)
                    floor_seconds = asyncio.run(floor(plane.admin_kubeconfig, template,
                                                      sorted(values)))
                    floor_cpu_ms = floor_cpu.per_object(count)
                finally:
                    os.kill(operator.pid, signal.SIGCONT)
            finally:
                reader.stop.set()
                reader.join(60)
        finally:
            api.close()
            operator.stop()
    base_rate, rotation_rate = count / base_seconds, count / rotation_seconds
    ratio = rotation_rate / base_rate
    floor_rate = count / floor_seconds
    print(f"credentials: {count} (sealed, one field each)", file=out)
    print(f"baseline direct Secret apply: {base_rate:7.1f} secrets/s ({base_seconds:.1f} s)",
          file=out)
    print(f"rotation to {new}          : {rotation_rate:7.1f} re-encrypted/s "
          f"({rotation_seconds:.1f} s)", file=out)
    print(f"ratio rotation/baseline     : {ratio:.2f}", file=out)
    print(f"floor (Secret + status, direct): {floor_rate:7.1f} Credentials/s "
          f"({floor_seconds:.1f} s); ratio rotation/floor: {rotation_rate / floor_rate:.2f}",
          file=out)
    print("apiserver requests per Credential during the rotation:\n  " + apiserver_cost
          .describe(requests_before, requests_after, count).replace("\n", "\n  "), file=out)
    print(f"per Credential re-encrypted: {rotation_cpu_text}; per Secret of the baseline: "
          + ", ".join(f"{name} {ms:.1f}" for name, ms in base_cpu_ms.items())
          + "; per Credential of the floor: "
          + ", ".join(f"{name} {ms:.1f}" for name, ms in floor_cpu_ms.items()), file=out)
    print(f"reader (during the rotation): {reader.reads} reads ({rotation_reads}), "
          f"{reader.failed} failed"
          + (f" ({'; '.join(reader.first_failures)})" if reader.failed else ""), file=out)
    if args.json:
        json.dump({"credentials": count, "baseline": {"secrets_per_s": base_rate,
                                                      "cpu_ms_per_secret": base_cpu_ms},
                   "rotation": {"reencrypted_per_s": rotation_rate,
                                "seconds": rotation_seconds,
                                "requests_per_credential": apiserver_cost.as_json(
                                    requests_before, requests_after, count),
                                "cpu_ms_per_credential": rotation_cpu_ms},
                   "ratio": ratio,
                   "floor": {"credentials_per_s": floor_rate,
                             "cpu_ms_per_credential": floor_cpu_ms},
                   "ratio_to_floor": rotation_rate / floor_rate, "reader": {"reads": reader.reads,
                                              "reads_during_rotation": rotation_reads,
                                              "failed": reader.failed}},
                  sys.stdout, indent=2)
        print()
    if reader.failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
