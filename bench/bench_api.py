"""Benchmark the API pod's front door: what authentication costs per request, and per login.

One run starts its own throwaway PostgreSQL (`LocalPostgres`, fsync off as in the tests) and a
local control plane (`LocalControlPlane`, for the Tenant the caller is a member of), migrates
every schema (`devenv.migrate_databases`, as `tenantry dev up` does), and serves the real
`tenantry api run` process on loopback with the audit ledger on. The load comes from this
process over keep-alive HTTP/1.1 connections (a small asyncio client, cheaper per request than
http.client threads, so it is not the bottleneck). Measured, each against a baseline of the
same run:

- **throughput at fixed concurrency** (`--concurrency`, closed loop, alternating blocks so
  that drift in machine load hits both sides alike): authenticated `GET /v1/me` (JWT verify,
  the revocation/session query, the membership lookup in the Tenant watch) against the
  unauthenticated `GET /healthz` of the same server; the ratio, p50/p99 of each, and the
  server's CPU time per request (read from /proc: on a machine shared with other work the
  CPU ratio moves far less than the throughput ratio);
- **latency at a fixed rate** (`--rate`, default 500 requests/s, open loop: latency counted from
  the time a request was due, so a stall is not hidden by the client waiting for it):
  p50/p99 of each path, against the goal of p99 < 5 ms for `/v1/me`;
- **token verification in process**: `tokens.rfc9068.verify` (every RFC 8725 rule) on a
  token's first presentation, and on later ones (answered from the verified-token cache, the
  clock rules checked again), against a bare `jwt.decode` of the same token with the same key,
  issuer and audience;
- **login throughput**: concurrent password logins/s through the server (Argon2id verify,
  session row, ledger entry), per core of the `--password-workers`-bounded hashing, against
  Argon2id verifications/s on one core in process: login is bounded by Argon2 by design.

Usage: ``.venv/bin/python bench/bench_api.py [--seconds S] [--concurrency C] [--rate R]
[--json]``; with ``--json`` the figures go to standard output as one JSON object (the table
then goes to standard error).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import asyncpg
import jwt

from tenantry import kube
from tenantry.api import passwords, store
from tenantry.api.tokens import rfc7517, rfc9068
from tenantry.devcluster.cluster import LocalControlPlane
from tenantry.devcluster.devenv import install_crds, migrate_databases
from tenantry.devcluster.postgres import LocalPostgres
from tenantry.devcluster.process import ManagedProcess, free_port, wait_until
from tenantry.ledger import migrations
from tenantry.model import common

USER = "bench@acme.example"
TENANT = "bench"
PASSWORD = secrets.token_urlsafe(24)
ISSUER = AUDIENCE = "tenantry-api"
GOAL_P99_MS, GOAL_RATIO = 5.0, 0.5


# -- a lean keep-alive HTTP/1.1 client -------------------------------------------------------

class Connection:
    """One keep-alive connection; requests are prebuilt bytes, answers (status, body)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length) if length else b""

    def close(self) -> None:
        self.writer.close()


def get(path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1",
             *(f"{name}: {value}" for name, value in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post_json(path: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(latencies: list[float]) -> dict[str, float]:
    return {"p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000}


async def closed_loop(port: int, requests: dict[str, bytes], concurrency: int, seconds: float,
                      blocks: int = 4, pid: int | None = None) -> dict[str, dict[str, float]]:
    """Requests/s and latencies per key at `concurrency`, alternating blocks of each key; with
    `pid`, also the server's CPU time per request (what the machine's other load changes
    least)."""
    conns = [await Connection.open(port) for _ in range(concurrency)]
    done = dict.fromkeys(requests, 0)
    spent = dict.fromkeys(requests, 0.0)
    cpu = dict.fromkeys(requests, 0.0)
    latencies: dict[str, list[float]] = {key: [] for key in requests}
    try:
        for _ in range(3):  # warm-up
            for raw in requests.values():
                await asyncio.gather(*(conn.request(raw) for conn in conns))
        for key in [key for _ in range(blocks // 2) for key in requests]:
            stop = time.perf_counter() + seconds / blocks

            async def work(conn: Connection, key: str = key, stop: float = stop) -> int:
                count = 0
                while time.perf_counter() < stop:
                    started = time.perf_counter()
                    status, body = await conn.request(requests[key])
                    latencies[key].append(time.perf_counter() - started)
                    if status != 200:
                        raise RuntimeError(f"{key}: HTTP {status}: {body[:200]!r}")
                    count += 1
                return count

            started, cpu_started = time.perf_counter(), cpu_seconds(pid) if pid else 0.0
            counts = await asyncio.gather(*(work(conn) for conn in conns))
            spent[key] += time.perf_counter() - started
            cpu[key] += cpu_seconds(pid) - cpu_started if pid else 0.0
            done[key] += sum(counts)
    finally:
        for conn in conns:
            conn.close()
    return {key: {"rate": done[key] / spent[key], **summary(latencies[key]),
                  **({"server_cpu_us": cpu[key] / done[key] * 1e6} if pid else {})}
            for key in requests}


async def open_loop(port: int, raw: bytes, rate: float, seconds: float,
                    connections: int = 32) -> dict[str, float]:
    """p50/p99 at a fixed arrival rate over at most `connections` connections; each latency is
    counted from the moment its request was due, so a request that waited for a free
    connection (the server fell behind) counts its wait too."""
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05
    claimed = 0
    latencies: list[float] = []

    async def worker(conn: Connection) -> None:
        nonlocal claimed
        while claimed < total:
            due = start + claimed / rate
            claimed += 1
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            status, body = await conn.request(raw)
            latencies.append(time.perf_counter() - due)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {body[:200]!r}")

    conns = [await Connection.open(port) for _ in range(connections)]
    try:
        await asyncio.gather(*(worker(conn) for conn in conns))
    finally:
        for conn in conns:
            conn.close()
    achieved = len(latencies) / (time.perf_counter() - start)
    return {"rate": achieved, **summary(latencies)}


async def logins(port: int, concurrency: int, seconds: float) -> float:
    """Successful password logins/s with `concurrency` clients."""
    raw = post_json("/v1/auth/login", {"username": USER, "password": PASSWORD})
    conns = [await Connection.open(port) for _ in range(concurrency)]
    stop = time.perf_counter() + seconds

    async def work(conn: Connection) -> int:
        count = 0
        while time.perf_counter() < stop:
            status, body = await conn.request(raw)
            if status != 200:
                raise RuntimeError(f"login: HTTP {status}: {body[:200]!r}")
            count += 1
        return count

    started = time.perf_counter()
    total = sum(await asyncio.gather(*(work(conn) for conn in conns)))
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    return total / elapsed


# -- in process ------------------------------------------------------------------------------

def ops_per_second(operation: Callable[[], object], seconds: float) -> float:
    count, started = 0, time.perf_counter()
    stop = started + seconds
    while time.perf_counter() < stop:
        for _ in range(50):
            operation()
        count += 50
    return count / (time.perf_counter() - started)


def verification(token: str, keys: rfc7517.KeySet, seconds: float) -> dict[str, float]:
    """Our verification with every rule, first presentation (the remembered tokens cleared each
    time) and repeated presentations, against a bare `jwt.decode` of the same token."""
    policy = rfc9068.Policy(issuer=ISSUER, audience=AUDIENCE)
    verification_keys = keys.verification_keys()
    public = keys.signing.public_key()
    rfc9068.verify(token, verification_keys, policy)  # the token is good before it is timed

    def first() -> object:
        rfc9068.VERIFIED.clear()
        return rfc9068.verify(token, verification_keys, policy)

    def again() -> object:
        return rfc9068.verify(token, verification_keys, policy)

    def bare() -> object:
        return jwt.decode(token, public, algorithms=["EdDSA"], audience=AUDIENCE,
                          issuer=ISSUER)

    bare_rate = ops_per_second(bare, seconds / 3)
    first_rate = ops_per_second(first, seconds / 3)
    again_rate = ops_per_second(again, seconds / 3)
    return {"bare_jwt_decode": bare_rate, "first": first_rate, "again": again_rate,
            "first_ratio": first_rate / bare_rate, "again_ratio": again_rate / bare_rate}


def argon2_per_core(seconds: float) -> float:
    hasher = passwords.Passwords()
    stored = hasher.hash(PASSWORD)
    return ops_per_second(lambda: hasher.verify(stored, PASSWORD), seconds)


# -- setup -----------------------------------------------------------------------------------

async def add_user(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await store.upsert_password_user(conn, USER, passwords.Passwords().hash(PASSWORD),
                                         replace=True)
    finally:
        await conn.close()


def add_tenant(kubeconfig: Path) -> None:
    api = kube.api_client(kubeconfig)
    try:
        kube.apply(api, [{"apiVersion": common.API_VERSION, "kind": "Tenant",
                          "metadata": {"name": TENANT},
                          "spec": {"members": [{"kind": "User", "name": USER, "role": "owner"}],
                                   "namespaces": [{"name": "bench-a"}]}}])
    finally:
        api.close()


def ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
        return bool(response.status == 200)


def start_api(state: Path, dsn_files: dict[str, Path], kubeconfig: Path,
              key_file: Path) -> tuple[ManagedProcess, int]:
    port = free_port()
    process = ManagedProcess(
        "api",
        [sys.executable, "-m", "tenantry", "api", "run",
         "--dsn-file", str(dsn_files["api"]), "--signing-key-file", str(key_file),
         "--listen", f"127.0.0.1:{port}", "--kubeconfig", str(kubeconfig),
         "--ledger-dsn-file", str(dsn_files[migrations.LEDGER.name]),
         "--ledger-spool", str(state / "api-spool"),
         "--auth-rate-limit", "1000000/s", "--issuer", ISSUER, "--audience", AUDIENCE],
        state / "api.log")
    return process, port


async def measure(port: int, pid: int, keys: rfc7517.KeySet, args: argparse.Namespace,
                  out: TextIO) -> dict[str, Any]:
    conn = await Connection.open(port)
    status, body = await conn.request(post_json("/v1/auth/login",
                                                {"username": USER, "password": PASSWORD}))
    if status != 200:
        raise RuntimeError(f"login: HTTP {status}: {body[:200]!r}")
    token = json.loads(body)["access_token"]
    me = get("/v1/me", {"Authorization": f"Bearer {token}"})

    deadline = time.monotonic() + 30  # the Tenant watch has the membership: a real lookup
    while True:
        status, body = await conn.request(me)
        if status == 200 and json.loads(body)["tenants"]:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"/v1/me never listed the tenant: HTTP {status} {body[:200]!r}")
        await asyncio.sleep(0.2)
    conn.close()
    figures: dict[str, Any] = {"concurrency": args.concurrency, "seconds": args.seconds,
                               "cpus": os.cpu_count()}

    requests = {"healthz": get("/healthz"), "me": me}
    closed = await closed_loop(port, requests, args.concurrency, 2 * args.seconds, pid=pid)
    ratio = closed["me"]["rate"] / closed["healthz"]["rate"]
    cpu_ratio = closed["healthz"]["server_cpu_us"] / closed["me"]["server_cpu_us"]
    figures["throughput"] = {**closed, "ratio": ratio, "cpu_ratio": cpu_ratio}
    print(f"throughput, {args.concurrency} concurrent keep-alive clients, alternating blocks:",
          file=out)
    for key, title in (("healthz", "GET /healthz (no auth)"), ("me", "GET /v1/me (Bearer)")):
        row = closed[key]
        print(f"  {title:<26}{row['rate']:8.0f} req/s   p50 {row['p50_ms']:6.2f} ms   "
              f"p99 {row['p99_ms']:6.2f} ms   server CPU {row['server_cpu_us']:5.0f} us/req",
              file=out)
    print(f"  ratio /v1/me over /healthz: {ratio:.2f} by throughput, {cpu_ratio:.2f} by server "
          f"CPU per request   (goal >= {GOAL_RATIO})", file=out)

    paced = {key: await open_loop(port, raw, args.rate, args.seconds)
             for key, raw in requests.items()}
    figures["fixed_rate"] = {"rate": args.rate, **paced}
    print(f"\nlatency at a fixed {args.rate:g} requests/s (open loop, from when each was due):",
          file=out)
    for key, title in (("healthz", "GET /healthz"), ("me", "GET /v1/me")):
        row = paced[key]
        print(f"  {title:<26}p50 {row['p50_ms']:6.2f} ms   p99 {row['p99_ms']:6.2f} ms   "
              f"({row['rate']:.0f} req/s achieved)", file=out)
    print(f"  goal: /v1/me p99 < {GOAL_P99_MS} ms -> "
          f"{'met' if paced['me']['p99_ms'] < GOAL_P99_MS else 'MISSED'}", file=out)

    verified = verification(token, keys, args.seconds)
    figures["verification"] = verified
    print(f"\ntoken verification in process (verifications/s):\n"
          f"  bare jwt.decode (signature, iss, aud, exp)     {verified['bare_jwt_decode']:9.0f}\n"
          f"  rfc9068.verify, first presentation (all rules) {verified['first']:9.0f}"
          f"   ratio {verified['first_ratio']:.2f}\n"
          f"  rfc9068.verify, presented again (clock rules)  {verified['again']:9.0f}"
          f"   ratio {verified['again_ratio']:.2f}", file=out)

    login_rate = await logins(port, args.login_concurrency, args.seconds)
    argon2 = argon2_per_core(args.seconds / 2)
    cores = min(args.password_workers, os.cpu_count() or 1)
    figures["login"] = {"logins_per_second": login_rate, "cores": cores,
                        "per_core": login_rate / cores, "argon2_verify_per_core": argon2,
                        "ratio": login_rate / cores / argon2}
    print(f"\nlogin, {args.login_concurrency} concurrent clients: {login_rate:.1f} logins/s = "
          f"{login_rate / cores:.1f} per core ({cores} hashing); Argon2id verify alone "
          f"{argon2:.1f}/s on one core; ratio {login_rate / cores / argon2:.2f}", file=out)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="duration of each measurement (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="concurrent clients for throughput (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="requests/s for the latency measurement (default: %(default)s)")
    parser.add_argument("--login-concurrency", type=int, default=4,
                        help="concurrent clients logging in (default: %(default)s)")
    parser.add_argument("--password-workers", type=int, default=2,
                        help="the server's Argon2 verifications at once (its default: 2)")
    parser.add_argument("--json", action="store_true",
                        help="print the figures as JSON on stdout (the table on stderr)")
    args = parser.parse_args()
    out = sys.stderr if args.json else sys.stdout
    started = time.perf_counter()
    state = Path(tempfile.mkdtemp(prefix="bench-api-"))
    keys = rfc7517.KeySet(signing=rfc7517.generate())
    key_file = state / "signing.pem"
    rfc7517.write_private_key(keys.signing, key_file)
    with LocalPostgres() as postgres, LocalControlPlane() as plane:
        install_crds(plane.admin_kubeconfig)
        add_tenant(plane.admin_kubeconfig)
        dsn_files = migrate_databases(postgres, state)
        asyncio.run(add_user(dsn_files["api"].read_text().strip()))
        process, port = start_api(state, dsn_files, plane.admin_kubeconfig, key_file)
        try:
            wait_until(lambda: ready(port), timeout=60, what="the API's /readyz",
                       process=process)
            print(f"tenantry API benchmark - {os.cpu_count()} cpus, one API process "
                  f"(uvicorn, one worker), PostgreSQL fsync off, {args.seconds:g} s per "
                  "measurement", file=out)
            figures = asyncio.run(measure(port, process.pid, keys, args, out))
        finally:
            process.stop()
    figures["total_seconds"] = time.perf_counter() - started
    print(f"total {figures['total_seconds']:.1f} s", file=out)
    if args.json:
        json.dump(figures, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
