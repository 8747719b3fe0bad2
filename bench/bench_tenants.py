"""Benchmark: Tenants reconciled per second by the real operator, against the apiserver's own limit.

One run, one local control plane:
  1. baseline: the same child objects the operator would make for N tenants, server-side applied
     directly with one async client (what the apiserver can take from a perfect client); then
     deleted, and the bench waits until it is gone (untimed: otherwise the garbage collector
     removes it, its owner never existed, while the operator runs, see `settle`);
  2. operator: N Tenant objects created as fast as one client creates them, one after the
     other; the time from each create to its Ready=True.
Prints tenants/s for both, p50/p99 create->Ready, and the ratio operator/baseline.

Also how long the creates alone took (the operator cannot finish before its input arrives, so
that time bounds the ratio), the CPU milliseconds per tenant that the operator and the
apiserver spent in each part, read from /proc (on a shared 2-core machine the rates move with
everyone else's load, the CPU a tenant costs much less), and the load average before and after.

    .venv/bin/python bench/bench_tenants.py [--tenants 200] [--concurrency 32]
        [--observe poll|watch] [--json]

With --json the figures go to standard output as one JSON object (the table to standard error):
{"observe", "baseline": {"tenants_per_s", "objects_per_s", "apiserver_cpu_ms_per_tenant",
 "removed_s", "cpu_ms_per_tenant": {process: ms}},
 "operator": {"tenants_per_s", "ready_p50_s", "ready_p99_s", "creates_s",
 "operator_cpu_ms_per_tenant", "apiserver_cpu_ms_per_tenant",
 "cpu_ms_per_tenant": {process: ms},
 "requests_per_tenant": {"VERB resource": n}}, "ratio", "load_average": [before, after]}.

`cpu_ms_per_tenant` has every process of the run, the control plane's (kube-apiserver, etcd,
kube-controller-manager), this bench's own ("bench": the client, and in the operator run its
Ready poll) and the operator's, and their "total": on 2 cores both phases are bound by CPU, so
the ratio follows total(baseline) / total(operator run) more than any one process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, cast

from kubernetes import client, watch

import apiserver_cost  # bench/: the script's directory is on sys.path
from apiserver_cost import cpu_seconds
from tenantry import kube
from tenantry.controller.tenant import desired, rbac
from tenantry.devcluster.cluster import LocalControlPlane
from tenantry.devcluster.devenv import install_crds, prepare_ledger, start_operator
from tenantry.devcluster.postgres import LocalPostgres
from tenantry.kubeapi import KubeApi
from tenantry.model import common
from tenantry.model.tenant import TenantSpec

GROUP, VERSION = "tenantry.dev", "v1alpha1"


def _spec(name: str) -> dict[str, object]:
    return {"members": [{"kind": "User", "name": f"{name}-owner", "role": "owner"},
                        {"kind": "User", "name": f"{name}-dev", "role": "member"}],
            "namespaces": [{"name": name}],
            "network": {"egress": [{"cidr": "0.0.0.0/0", "ports": [{"port": 443}]}]}}


async def baseline(kubeconfig: Path, tenants: int, concurrency: int) -> tuple[float, int]:
    """Seconds to apply every tenant's children directly; number of objects applied."""
    api = await KubeApi.from_kubeconfig(str(kubeconfig))
    for role in rbac.cluster_roles():
        await api.apply(role)
    plans = []
    for index in range(tenants):
        name = f"base-{index:04d}"
        spec = TenantSpec.model_validate(_spec(name))
        plans.append(desired.desired_objects(name, str(uuid.uuid4()), spec))
    limit = asyncio.Semaphore(concurrency)

    async def one(objects: list[dict[str, object]]) -> None:
        async with limit:
            for obj in objects:  # the same order the operator uses
                await api.apply(obj)

    started = time.perf_counter()
    await asyncio.gather(*(one(p) for p in plans))
    elapsed = time.perf_counter() - started
    await api.close()
    return elapsed, sum(len(p) for p in plans)


def settle(kubeconfig: Path, tenants: int, timeout: float = 300.0) -> float:
    """Delete what the baseline applied and wait until it is gone; the seconds that took.

    Its children name as owner a Tenant UID that never existed, so the garbage collector deletes
    them anyway, and did so while the operator ran: per child a GET of the absent owner, a GET
    and a DELETE of the child (apiserver CPU and requests the operator run was charged with), and
    a drift event in the operator for each (a GET of the baseline's absent Tenant); and every
    baseline namespace, a tenant namespace to the operator, got a watch of its ciphertext
    Secrets. Deleting the namespaces takes their contents with them; this is not timed."""
    api = kube.api_client(kubeconfig)
    core, rbac_api = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    started = time.perf_counter()

    def remove(delete: Any, name: str) -> None:
        try:
            delete(name)
        except client.ApiException as error:
            if error.status != 404:
                raise

    def remaining() -> list[tuple[Any, str]]:
        left = [(core.delete_namespace, n.metadata.name) for n in core.list_namespace(
            label_selector=common.TENANT_LABEL).items]
        left += [(rbac_api.delete_cluster_role, r.metadata.name) for r in
                 rbac_api.list_cluster_role(label_selector=common.TENANT_LABEL).items]
        left += [(rbac_api.delete_cluster_role_binding, b.metadata.name) for b in
                 rbac_api.list_cluster_role_binding(label_selector=common.TENANT_LABEL).items]
        return left

    deleted = False
    while left := remaining():
        if time.perf_counter() - started > timeout:
            sys.exit(f"{len(left)} objects of the baseline still there after {timeout:.0f} s")
        if not deleted:
            for delete, name in left:
                remove(delete, name)
            deleted = True
        time.sleep(0.5)
    api.close()
    return time.perf_counter() - started


def operator_run(kubeconfig: Path, tenants: int,
                 observe: str = "poll") -> tuple[float, list[float], float]:
    """Seconds until all N tenants are Ready; per-tenant create->Ready latencies; seconds the
    creates themselves took (one client, one after the other: the operator's input rate).

    `observe` is how Ready is seen: "poll" lists every Tenant every 0.1 s (as this bench always
    did; a list cannot silently end early), "watch" follows one watch. Polling costs the
    apiserver, and this process's create loop, more the sooner Tenants carry their status: it
    weighs on a fast operator's run more than on a slow one's.
    """
    api = kube.api_client(kubeconfig)
    custom = client.CustomObjectsApi(api)
    names = [f"bench-{index:04d}" for index in range(tenants)]
    created: dict[str, float] = {}
    ready: dict[str, float] = {}
    done = threading.Event()
    deadline = time.perf_counter() + 600

    def seen(obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        conditions = (obj.get("status") or {}).get("conditions") or []
        if name not in ready and any(c["type"] == "Ready" and c["status"] == "True"
                                     for c in conditions):
            ready[name] = time.perf_counter()

    def listed() -> str:
        listing = cast(dict[str, Any], custom.list_cluster_custom_object(GROUP, VERSION,
                                                                         "tenants"))
        for obj in listing["items"]:
            seen(obj)
        return str(listing["metadata"]["resourceVersion"])

    def poller() -> None:
        while len(ready) < tenants and time.perf_counter() < deadline:
            listed()
            time.sleep(0.1)
        done.set()

    def follower() -> None:
        version = listed()
        while len(ready) < tenants and time.perf_counter() < deadline:
            try:
                for event in watch.Watch().stream(
                        custom.list_cluster_custom_object, GROUP, VERSION, "tenants",
                        resource_version=version, timeout_seconds=30):
                    obj = cast(dict[str, Any], event["object"])
                    version = str(obj["metadata"].get("resourceVersion") or version)
                    seen(obj)
                    if len(ready) >= tenants:
                        break
            except client.ApiException as error:
                if error.status != 410:
                    raise
                version = listed()  # expired: list again, then watch from there
        done.set()

    watcher = poller if observe == "poll" else follower
    thread = threading.Thread(target=watcher, daemon=True)
    thread.start()
    time.sleep(0.5)
    started = time.perf_counter()
    for name in names:
        created[name] = time.perf_counter()
        custom.create_cluster_custom_object(GROUP, VERSION, "tenants", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": name},
            "spec": _spec(name)})
    creating = time.perf_counter() - started
    done.wait(660)
    if len(ready) < tenants:
        sys.exit(f"only {len(ready)}/{tenants} tenants became Ready within 600 s")
    elapsed = max(ready.values()) - started
    api.close()
    return elapsed, sorted(ready[n] - created[n] for n in names), creating


def apiserver_pid(plane: LocalControlPlane) -> int:
    return next(p.pid for p in plane.processes() if p.name == "kube-apiserver")


def cpu_by_process(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each process named."""
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def ms_per_tenant(before: dict[str, float], after: dict[str, float],
                  tenants: int) -> dict[str, float]:
    """CPU milliseconds per tenant of each process between the readings, and their total."""
    spent = {name: round(1000 * (after[name] - before[name]) / tenants, 1) for name in after}
    return {**spent, "total": round(sum(spent.values()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32,
                        help="tenants applied in parallel by the baseline client")
    parser.add_argument("--observe", choices=("poll", "watch"), default="poll",
                        help="how Ready is seen: a list every 0.1 s (as always), or a watch")
    parser.add_argument("--json", action="store_true",
                        help="print the figures as JSON on stdout (the table on stderr)")
    args = parser.parse_args()
    out = sys.stderr if args.json else sys.stdout
    load_before = os.getloadavg()[0]
    with LocalControlPlane() as plane, LocalPostgres() as postgres:
        install_crds(plane.admin_kubeconfig)
        apiserver = apiserver_pid(plane)
        pids = {p.name: p.pid for p in plane.processes()} | {"bench": os.getpid()}
        cpu_start, every_start = cpu_seconds(apiserver), cpu_by_process(pids)
        base_seconds, objects = asyncio.run(
            baseline(plane.admin_kubeconfig, args.tenants, args.concurrency))
        base_apiserver_cpu = cpu_seconds(apiserver) - cpu_start
        base_cpu = ms_per_tenant(every_start, cpu_by_process(pids), args.tenants)
        settle_seconds = settle(plane.admin_kubeconfig, args.tenants)
        # The operator as shipped: every change it makes goes to the audit ledger.
        state = Path(tempfile.mkdtemp())
        operator = start_operator(plane.admin_kubeconfig, state, prepare_ledger(postgres, state))
        try:
            admin = kube.api_client(plane.admin_kubeconfig)
            requests_before = apiserver_cost.snapshot(admin)
            pids["operator"] = operator.pid
            cpu_start, op_cpu_start = cpu_seconds(apiserver), cpu_seconds(operator.pid)
            every_start = cpu_by_process(pids)
            op_seconds, latencies, create_seconds = operator_run(
                plane.admin_kubeconfig, args.tenants, args.observe)
            op_run_cpu = ms_per_tenant(every_start, cpu_by_process(pids), args.tenants)
            requests_after = apiserver_cost.snapshot(admin)
            admin.close()
            op_apiserver_cpu = cpu_seconds(apiserver) - cpu_start
            op_cpu = cpu_seconds(operator.pid) - op_cpu_start
        finally:
            operator.stop()
    load_after = os.getloadavg()[0]
    per_tenant_ms = 1000 / args.tenants
    base_rate = args.tenants / base_seconds
    op_rate = args.tenants / op_seconds
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    p50 = statistics.median(latencies)
    print(f"tenants: {args.tenants} ({objects // args.tenants} child objects each)", file=out)
    print(f"baseline direct apply : {base_rate:7.1f} tenants/s  "
          f"({objects / base_seconds:.0f} objects/s, {base_seconds:.1f} s)", file=out)
    print(f"baseline removed      : in {settle_seconds:.1f} s, before the operator started "
          "(its owner never existed: left in place, the garbage collector deleted it during "
          "the operator run)", file=out)
    print(f"operator              : {op_rate:7.1f} tenants/s  ({op_seconds:.1f} s; the creates "
          f"alone took {create_seconds:.1f} s)", file=out)
    print(f"create->Ready         : p50 {p50:.2f} s, p99 {p99:.2f} s", file=out)
    print(f"ratio operator/baseline: {op_rate / base_rate:.2f}", file=out)
    print(f"CPU per tenant        : apiserver {base_apiserver_cpu * per_tenant_ms:.0f} ms "
          f"(baseline), {op_apiserver_cpu * per_tenant_ms:.0f} ms (operator run); "
          f"operator {op_cpu * per_tenant_ms:.0f} ms", file=out)
    print("CPU ms per tenant, every process: baseline " + ", ".join(
              f"{k} {v:.0f}" for k, v in base_cpu.items()) + "; operator run " + ", ".join(
              f"{k} {v:.0f}" for k, v in op_run_cpu.items()), file=out)
    print("apiserver requests per tenant in the operator run (the bench's creates and Ready "
          "polls included):\n  " + apiserver_cost.describe(
              requests_before, requests_after, args.tenants).replace("\n", "\n  "), file=out)
    print(f"load average (1 min)  : {load_before:.1f} before, {load_after:.1f} after", file=out)
    if args.json:
        json.dump({"tenants": args.tenants, "children_per_tenant": objects // args.tenants,
                   "observe": args.observe,
                   "baseline": {"tenants_per_s": base_rate,
                                "objects_per_s": objects / base_seconds,
                                "apiserver_cpu_ms_per_tenant":
                                    base_apiserver_cpu * per_tenant_ms,
                                "removed_s": settle_seconds, "cpu_ms_per_tenant": base_cpu},
                   "operator": {"tenants_per_s": op_rate, "ready_p50_s": p50,
                                "ready_p99_s": p99, "creates_s": create_seconds,
                                "operator_cpu_ms_per_tenant": op_cpu * per_tenant_ms,
                                "apiserver_cpu_ms_per_tenant": op_apiserver_cpu * per_tenant_ms,
                                "cpu_ms_per_tenant": op_run_cpu,
                                "requests_per_tenant": apiserver_cost.as_json(
                                    requests_before, requests_after, args.tenants)},
                   "ratio": op_rate / base_rate,
                   "load_average": [load_before, load_after]}, sys.stdout, indent=2)
        print()

if __name__ == "__main__":
    main()
