"""Benchmark: the hardening rules over Pod Security Admission's fixture pods, per pod.

Measures, per pod and in the same run (interleaved round by round, so that machine noise hits
every series alike):

- rules:     `rules.check_pod` at Tenantry's level (PSA restricted + Tenantry's extras);
- decision:  `policy.evaluate` on the pod (rules plus a tenant policy with exemptions);
- walk:      a trivial visitor that touches every node of the pod dict (the floor for anything
             that reads the whole pod);
- deepcopy:  `copy.deepcopy` of the pod (what copying the request would cost).

Prints p50/p99 in microseconds per pod, and the ratios of rules and decision to both baselines.
Runs in a few seconds:

    .venv/bin/python bench/bench_rules.py [--rounds N]
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tenantry.admission import policy, rules
from tenantry.admission.violation import Level
from tenantry.devcluster import build
from tenantry.model import tenant

Pod = dict[str, Any]


def fixture_pods() -> list[Pod]:
    """Every fixture pod (both levels, pass and fail) of the pinned PSA version."""
    try:
        root = build.pod_security_fixtures_dir()
    except (build.BuildError, OSError, subprocess.CalledProcessError) as error:
        sys.exit(f"cannot locate the Go module cache: {error}")
    files = sorted(root.glob(f"*/{tenant.POD_SECURITY_VERSION}/*/*.yaml"))
    if not files:
        sys.exit(f"no Pod Security fixtures under {root}; run `tenantry dev build` first")
    return [yaml.safe_load(Path(f).read_text()) for f in files]


def walk(node: Any) -> int:
    """Count every node: the cheapest possible full read of a pod."""
    if isinstance(node, dict):
        return 1 + sum(walk(value) for value in node.values())
    if isinstance(node, list):
        return 1 + sum(walk(item) for item in node)
    return 1


POLICY = tenant.PodSecurity(exemptions=[
    tenant.Exemption(rule="readOnlyRootFilesystem", image="registry.example/legacy",
                     reason="bench"),
    tenant.Exemption(namespace="other", reason="bench"),
])


def series() -> dict[str, Callable[[Pod], object]]:
    return {
        "rules": lambda pod: rules.check_pod(pod.get("metadata", {}), pod["spec"]),
        "decision": lambda pod: policy.evaluate(pod, POLICY, namespace="team-a"),
        "walk": walk,
        "deepcopy": copy.deepcopy,
    }


def measure(pods: list[Pod], rounds: int) -> dict[str, list[float]]:
    """Microseconds per call, per series, over `rounds` passes over every pod."""
    functions = series()
    samples: dict[str, list[float]] = {name: [] for name in functions}
    clock = time.perf_counter_ns
    for pod in pods:  # warm up caches and the interpreter's specialisations
        for function in functions.values():
            function(pod)
    gc.disable()
    try:
        for _ in range(rounds):
            for name, function in functions.items():
                record = samples[name].append
                for pod in pods:
                    start = clock()
                    function(pod)
                    record((clock() - start) / 1000)
    finally:
        gc.enable()
    return samples


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100, help="passes over all pods")
    args = parser.parse_args(argv)
    pods = fixture_pods()
    violations = sum(len(rules.check_pod(p.get("metadata", {}), p["spec"])) for p in pods)
    print(f"{len(pods)} fixture pods (PSA {tenant.POD_SECURITY_VERSION}), {violations} "
          f"violations in all, {args.rounds} rounds, {len(rules.rules_at(Level.TENANTRY))}"
          " rules")
    started = time.perf_counter()
    samples = measure(pods, args.rounds)
    p50 = {name: percentile(values, 0.50) for name, values in samples.items()}
    p99 = {name: percentile(values, 0.99) for name, values in samples.items()}
    print(f"{'series':<10} {'p50 µs':>8} {'p99 µs':>8} {'mean µs':>8}")
    for name, values in samples.items():
        print(f"{name:<10} {p50[name]:8.1f} {p99[name]:8.1f} {statistics.fmean(values):8.1f}")
    for name in ("rules", "decision"):
        for base in ("walk", "deepcopy"):
            print(f"{name} / {base}: p50 {p50[name] / p50[base]:.2f}x, "
                  f"p99 {p99[name] / p99[base]:.2f}x")
    print(f"measured in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
