"""Benchmark: what the admission webhook adds to a pod create, through the real apiserver.

One run, one local control plane, one webhook process (`tenantry webhook run`, called by URL):
  - a tenant namespace (labelled for a Tenant: the webhook reviews its pods) and a plain one
    (not selected: the apiserver never calls the webhook), no Pod Security labels on either, so
    the webhook is the only difference;
  - latency: N dry-run creates of a hardened pod in each, interleaved A B B A ... on one
    keep-alive connection; p50/p99 of each, the added latency and the ratio;
  - throughput: creates/s with C concurrent clients, in alternating blocks (plain, tenant,
    plain, tenant) so that drift in machine load hits both sides alike;
  - the webhook alone: AdmissionReviews/s posted straight to it with C clients (presenting the
    apiserver's webhook client certificate, as the webhook requires).
Dry runs are admitted (and reviewed) like real creates but store nothing.

Rates move with the machine's load; CPU per request does much less: during each throughput block
the CPU time (/proc/PID/stat, user + system) of the webhook, the apiserver, etcd and this client
is divided by the requests done, in microseconds. Their sum per plain create over their sum per
tenant create is `cpu_ratio`: the throughput ratio a machine whose cores these processes keep
busy would show, steadier than the measured one when other load comes and goes. The webhook's
connections (ESTABLISHED, and TIME_WAIT left by closed ones) are counted at the end of each
block with the webhook: a keep-alive the apiserver reuses leaves a handful established and none
waiting.

    .venv/bin/python bench/bench_webhook.py [--requests 1000] [--concurrency 8] [--json]

With --json the figures go to standard output as one JSON object (the table to standard error):
{"latency_ms": {"without", "with"} each {"p50", "p99"}, "added_ms": {"p50", "p99"},
 "throughput": {"without", "with", "direct"} (requests/s), "ratio",
 "cpu_us_per_request": {"without", "with", "direct"} each {"webhook", "webhook_system" (the
 kernel's part of it), "apiserver", "etcd", "client"}, "webhook_cpu_us_per_review" (through
 the apiserver),
 "cpu_ratio", "webhook_connections": {"established", "time_wait"} (largest seen)}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tenantry import kube
from tenantry.devcluster.cluster import WEBHOOK_CLIENT_CN, LocalControlPlane
from tenantry.devcluster.devenv import install_crds, start_webhook
from tenantry.devcluster.process import wait_until
from tenantry.model import common

TENANT, TENANT_NS, PLAIN_NS = "bench", "bench-tenant", "bench-plain"


def hardened_pod(namespace: str) -> dict[str, Any]:
    context = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
               "capabilities": {"drop": ["ALL"]}}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "bench-", "namespace": namespace},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": "registry.example/app:1",
                            "securityContext": context},
                           {"name": "sidecar", "image": "registry.example/proxy:1",
                            "securityContext": context}],
        },
    }


class Client:
    """One keep-alive HTTPS connection with a client certificate."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.connection = http.client.HTTPSConnection("127.0.0.1", port, context=context,
                                                      timeout=30)

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.connection.request("POST", path, body=body,
                                headers={"Content-Type": "application/json"})
        response = self.connection.getresponse()
        return response.status, response.read()


def admin_context(plane: LocalControlPlane) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(plane.workdir / "ca.crt"))
    context.load_cert_chain(str(plane.workdir / "admin.crt"), str(plane.workdir / "admin.key"))
    return context


def create_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods?dryRun=All"


def timed(client: Client, namespace: str, body: bytes) -> float:
    started = time.perf_counter()
    status, answer = client.post(create_path(namespace), body)
    elapsed = time.perf_counter() - started
    if status != 201:
        raise RuntimeError(f"create in {namespace}: HTTP {status}: {answer[:300]!r}")
    return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency(plane: LocalControlPlane, requests: int) -> dict[str, list[float]]:
    client = Client(plane.port, admin_context(plane))
    bodies = {ns: json.dumps(hardened_pod(ns)).encode() for ns in (TENANT_NS, PLAIN_NS)}
    for _ in range(50):  # warm-up: connections, caches, JIT-less but still
        for ns in (TENANT_NS, PLAIN_NS):
            timed(client, ns, bodies[ns])
    samples: dict[str, list[float]] = {TENANT_NS: [], PLAIN_NS: []}
    for index in range(requests):
        order = (TENANT_NS, PLAIN_NS) if index % 2 == 0 else (PLAIN_NS, TENANT_NS)
        for ns in order:
            samples[ns].append(timed(client, ns, bodies[ns]))
    return samples


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> tuple[float, float]:
    """User and system CPU time of process `pid` (None: this process), in seconds."""
    if pid is None:
        times = os.times()
        return times.user, times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK  # utime, stime (fields 14, 15)


def connections(port: int) -> dict[str, int]:
    """TCP connections to local `port`: ESTABLISHED and TIME_WAIT (left by closed ones)."""
    counts = {"established": 0, "time_wait": 0}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if int(local.rsplit(":", 1)[1], 16) != port:
                continue
            if state == "01":
                counts["established"] += 1
            elif state == "06":
                counts["time_wait"] += 1
    return counts


class Meter:
    """CPU seconds (user + system) of named processes; also the system part of `split`'s."""

    def __init__(self, pids: dict[str, int | None], split: str = "webhook") -> None:
        self.pids = pids
        self.split = split

    def read(self) -> dict[str, float]:
        seconds: dict[str, float] = {}
        for name, pid in self.pids.items():
            user, system = cpu_seconds(pid)
            seconds[name] = user + system
            if name == self.split:
                seconds[f"{name}_system"] = system
        return seconds


def throughput(port: int, context: ssl.SSLContext, path_of: dict[str, str],
               bodies: dict[str, bytes], concurrency: int, seconds: float,
               blocks: int = 4, meter: Meter | None = None,
               cpu: dict[str, dict[str, float]] | None = None,
               watch_port: int | None = None,
               seen: dict[str, int] | None = None) -> dict[str, float]:
    """Requests/s per key, in alternating blocks of `seconds / blocks` each.

    With `meter`, `cpu[key]` receives each metered process's CPU microseconds per request; with
    `watch_port`, `seen` the most connections to it counted at the end of a block.
    """
    done = dict.fromkeys(path_of, 0)
    spent = dict.fromkeys(path_of, 0.0)
    used: dict[str, dict[str, float]] = {key: {} for key in path_of}
    clients = [Client(port, context) for _ in range(concurrency)]
    order = [key for _ in range(blocks // 2) for key in path_of]
    for key in order:
        stop = time.perf_counter() + seconds / blocks
        counts = [0] * concurrency
        errors: list[str] = []

        def work(index: int, key: str = key, stop: float = stop,
                 counts: list[int] = counts, errors: list[str] = errors) -> None:
            client = clients[index]
            while time.perf_counter() < stop:
                status, answer = client.post(path_of[key], bodies[key])
                if status not in (200, 201):
                    errors.append(f"HTTP {status}: {answer[:200]!r}")
                    return
                counts[index] += 1

        before = meter.read() if meter is not None else {}
        started = time.perf_counter()
        threads = [threading.Thread(target=work, args=(i,)) for i in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise RuntimeError(f"{key}: {errors[0]}")
        spent[key] += time.perf_counter() - started
        done[key] += sum(counts)
        if meter is not None:
            after = meter.read()
            for name in after:
                used[key][name] = used[key].get(name, 0.0) + after[name] - before[name]
        if watch_port is not None and seen is not None:
            for state, count in connections(watch_port).items():
                seen[state] = max(seen.get(state, 0), count)
    if cpu is not None:
        for key in path_of:
            cpu[key] = {name: 1e6 * value / max(done[key], 1)
                        for name, value in used[key].items()}
    return {key: done[key] / spent[key] for key in path_of}


def review_body(namespace: str, index: int = 0) -> bytes:
    pod = hardened_pod(namespace)
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": {"uid": f"bench-{index}",
                                   "kind": {"group": "", "version": "v1", "kind": "Pod"},
                                   "resource": {"group": "", "version": "v1",
                                                "resource": "pods"},
                                   "operation": "CREATE", "namespace": namespace,
                                   "userInfo": {"username": "bench"}, "object": pod,
                                   "dryRun": True}}).encode()


def prepare(plane: LocalControlPlane) -> None:
    api = kube.api_client(plane.admin_kubeconfig)
    try:
        kube.apply(api, [
            {"apiVersion": common.API_VERSION, "kind": "Tenant", "metadata": {"name": TENANT},
             "spec": {"members": [{"kind": "User", "name": "bench", "role": "owner"}],
                      "namespaces": [{"name": TENANT_NS}]}},
            {"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": TENANT_NS, "labels": {common.TENANT_LABEL: TENANT}}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PLAIN_NS}},
        ])
    finally:
        api.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000,
                        help="sequential creates per namespace for latency (default 1000)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="concurrent clients for throughput (default 8)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="throughput time per side (default 20)")
    parser.add_argument("--json", action="store_true",
                        help="print the figures as JSON on stdout (the table on stderr)")
    args = parser.parse_args()
    out = sys.stderr if args.json else sys.stdout

    with LocalControlPlane() as plane:
        install_crds(plane.admin_kubeconfig)
        prepare(plane)
        workdir = Path(tempfile.mkdtemp(prefix="bench-webhook-"))
        webhook = start_webhook(plane.admin_kubeconfig, workdir,
                                client_ca=plane.webhook_client_ca, client_cns=[WEBHOOK_CLIENT_CN])
        try:
            context = admin_context(plane)
            client = Client(plane.port, context)
            # The webhook is live for the tenant namespace: a root pod is refused there.
            root = hardened_pod(TENANT_NS)
            root["spec"]["securityContext"]["runAsNonRoot"] = False

            for ns in (TENANT_NS, PLAIN_NS):  # pods need the default ServiceAccount
                body = json.dumps(hardened_pod(ns)).encode()

                def admitted(ns: str = ns, body: bytes = body) -> bool:
                    return client.post(create_path(ns), body)[0] == 201

                wait_until(admitted, timeout=30, what=f"{ns}'s default ServiceAccount")

            def enforcing() -> bool:
                _, answer = client.post(create_path(TENANT_NS), json.dumps(root).encode())
                return b"workloads.admission.tenantry.dev" in answer

            wait_until(enforcing, timeout=30, what="the apiserver to call the webhook")

            samples = latency(plane, args.requests)
            tenant, plain = samples[TENANT_NS], samples[PLAIN_NS]
            bodies = {ns: json.dumps(hardened_pod(ns)).encode() for ns in (TENANT_NS, PLAIN_NS)}
            webhook_port = int(next(a for a in webhook.argv if a.startswith("127.0.0.1:"))
                               .rsplit(":", 1)[1])
            pids = {process.name: process.pid for process in plane.processes()}
            meter = Meter({"webhook": webhook.pid, "apiserver": pids["kube-apiserver"],
                           "etcd": pids["etcd"], "client": None})
            cpu: dict[str, dict[str, float]] = {}
            seen: dict[str, int] = {}
            rates = throughput(plane.port, context,
                               {ns: create_path(ns) for ns in (PLAIN_NS, TENANT_NS)},
                               bodies, args.concurrency, 2 * args.seconds, meter=meter,
                               cpu=cpu, watch_port=webhook_port, seen=seen)
            direct_context = ssl.create_default_context(
                cafile=str(workdir / "webhook-certs" / "ca.crt"))
            # The webhook answers only the apiserver: post with its client certificate.
            direct_context.load_cert_chain(str(plane.webhook_client_cert),
                                           str(plane.webhook_client_key))
            direct = throughput(webhook_port, direct_context,
                                {"direct": "/validate/workloads"},
                                {"direct": review_body(TENANT_NS)}, args.concurrency,
                                args.seconds, blocks=2, meter=meter, cpu=cpu)
        finally:
            webhook.stop()
            shutil.rmtree(workdir, ignore_errors=True)  # its certificates and logs

    ms = 1000.0
    p50_t, p50_p = statistics.median(tenant) * ms, statistics.median(plain) * ms
    p99_t, p99_p = percentile(tenant, 0.99) * ms, percentile(plain, 0.99) * ms
    ratio = rates[TENANT_NS] / rates[PLAIN_NS]
    processes = ("webhook", "apiserver", "etcd", "client")
    cpu_ratio = (sum(cpu[PLAIN_NS][name] for name in processes)
                 / sum(cpu[TENANT_NS][name] for name in processes))
    print(f"dry-run pod creates, {args.requests} per namespace, interleaved, one connection:",
          file=out)
    print(f"  without webhook (plain namespace): p50 {p50_p:6.2f} ms   p99 {p99_p:6.2f} ms",
          file=out)
    print(f"  with webhook (tenant namespace):   p50 {p50_t:6.2f} ms   p99 {p99_t:6.2f} ms",
          file=out)
    print(f"  added latency:                     p50 {p50_t - p50_p:6.2f} ms   "
          f"p99 {p99_t - p99_p:6.2f} ms", file=out)
    print(f"  ratio with/without:                p50 {p50_t / p50_p:6.2f}x    "
          f"p99 {p99_t / p99_p:6.2f}x", file=out)
    print(f"throughput, {args.concurrency} concurrent clients, alternating blocks:", file=out)
    print(f"  without webhook: {rates[PLAIN_NS]:7.1f} creates/s", file=out)
    print(f"  with webhook:    {rates[TENANT_NS]:7.1f} creates/s (= reviews/s through the "
          f"apiserver)   ratio {ratio:.2f}", file=out)
    print(f"  webhook alone:   {direct['direct']:7.1f} AdmissionReviews/s posted directly",
          file=out)
    print("CPU per request (us), during those blocks:", file=out)
    names = ("webhook", "webhook_system", "apiserver", "etcd", "client")
    print("  " + " " * 17 + "".join(f"{name.replace('webhook_', 'of it '):>15}"
                                     for name in names), file=out)
    for label, key in (("without webhook", PLAIN_NS), ("with webhook", TENANT_NS),
                       ("webhook alone", "direct")):
        print(f"  {label + ':':<17}" + "".join(f"{cpu[key][name]:15.0f}" for name in names),
              file=out)
    print(f"  CPU ratio (all four, per plain create / per tenant create): {cpu_ratio:.2f}",
          file=out)
    print(f"webhook connections (most seen at a block's end): {seen.get('established', 0)} "
          f"established, {seen.get('time_wait', 0)} in TIME_WAIT", file=out)
    out.flush()
    if args.json:
        json.dump({"requests": args.requests, "concurrency": args.concurrency,
                   "latency_ms": {"without": {"p50": p50_p, "p99": p99_p},
                                  "with": {"p50": p50_t, "p99": p99_t}},
                   "added_ms": {"p50": p50_t - p50_p, "p99": p99_t - p99_p},
                   "throughput": {"without": rates[PLAIN_NS], "with": rates[TENANT_NS],
                                  "direct": direct["direct"]},
                   "ratio": ratio,
                   "cpu_us_per_request": {"without": cpu[PLAIN_NS], "with": cpu[TENANT_NS],
                                          "direct": cpu["direct"]},
                   "webhook_cpu_us_per_review": cpu[TENANT_NS]["webhook"],
                   "cpu_ratio": cpu_ratio,
                   "webhook_connections": seen}, sys.stdout, indent=2)
        print()

if __name__ == "__main__":
    main()
