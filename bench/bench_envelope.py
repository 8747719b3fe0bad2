"""Envelope encrypt+decrypt of a 1 KiB value against raw AESGCM, measured in the same run.

Raw `AESGCM.encrypt` + `decrypt` with a fresh random nonce is the floor: the envelope can only add
to it (header building and parsing, context encoding into the AAD, the key-id check, a cached
key lookup). The ratio says what that costs.

The two are measured in alternating batches (A B B A ...), so a noisy neighbour or a frequency
change hurts both alike; the ratio is also reported as the median of per-pair ratios, which a
single slow batch cannot move.

    .venv/bin/python bench/bench_envelope.py [--seconds 4] [--size 1024]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tenantry.crypto import envelope, keyring

TENANT_UID = "3f2b8c1e-7a4d-4e2f-9b1c-5d6e7f8a9b0c"
# One batch should last long enough to dwarf timer overhead, short enough to interleave often.
BATCH_SECONDS = 0.02


def envelope_op(ring: keyring.Keyring, context: envelope.Context,
                value: bytes) -> Callable[[], None]:
    def run() -> None:
        if envelope.open_value(ring, context, envelope.seal_value(ring, context, value)) != value:
            raise AssertionError("envelope round trip changed the value")
    return run


def raw_op(aead: AESGCM, value: bytes) -> Callable[[], None]:
    def run() -> None:
        nonce = os.urandom(12)  # the envelope draws a random nonce too: same work, fair floor
        if aead.decrypt(nonce, aead.encrypt(nonce, value, None), None) != value:
            raise AssertionError("AESGCM round trip changed the value")
    return run


def timed(op: Callable[[], None], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        op()
    return time.perf_counter() - start


def batch_size(op: Callable[[], None]) -> int:
    """How many calls of `op` take about BATCH_SECONDS (after a warm-up)."""
    count = 16
    while (elapsed := timed(op, count)) < BATCH_SECONDS / 4:
        count *= 2
    return max(1, int(count * BATCH_SECONDS / elapsed))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="total measuring time, split between the two (default: 4)")
    parser.add_argument("--size", type=int, default=1024, help="value size in bytes (1024)")
    args = parser.parse_args(argv)

    value = os.urandom(args.size)
    ring = keyring.generate()
    context = envelope.Context(tenant_uid=TENANT_UID, namespace="team-a",
                               credential="billing-db", field="password", generation=1,
                               credential_uid="6c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e")
    ops = {"envelope": envelope_op(ring, context, value),
           "raw AESGCM": raw_op(AESGCM(os.urandom(32)), value)}
    sizes = {name: batch_size(op) for name, op in ops.items()}

    totals = dict.fromkeys(ops, 0.0)
    counts = dict.fromkeys(ops, 0)
    pair_ratios: list[float] = []
    deadline = time.perf_counter() + args.seconds
    order = list(ops)
    while time.perf_counter() < deadline or not pair_ratios:
        rates = {}
        for name in order:
            elapsed = timed(ops[name], sizes[name])
            totals[name] += elapsed
            counts[name] += sizes[name]
            rates[name] = sizes[name] / elapsed
        pair_ratios.append(rates["raw AESGCM"] / rates["envelope"])
        order.reverse()

    print(f"{args.size}-byte value, encrypt+decrypt round trips, {len(pair_ratios)} interleaved "
          f"batch pairs over {sum(totals.values()):.1f} s")
    throughput = {name: counts[name] / totals[name] for name in ops}
    for name in ops:
        print(f"  {name:<11} {throughput[name]:>10,.0f} ops/s  "
              f"{1e6 / throughput[name]:>7.2f} us/op  ({counts[name]:,} ops)")
    print(f"  ratio raw/envelope: {throughput['raw AESGCM'] / throughput['envelope']:.2f}x "
          f"overall, {statistics.median(pair_ratios):.2f}x median of pairs "
          f"(envelope reaches {throughput['envelope'] / throughput['raw AESGCM']:.0%} of raw)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
