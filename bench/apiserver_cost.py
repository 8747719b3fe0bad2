"""What a benchmark phase cost: apiserver requests (`apiserver_request_total`) and CPU seconds.

The benches price work by throughput against a baseline of the same run; on a machine shared
with other work the load moves between the phases and the ratios with it. These figures do not
move with it: requests by (verb, resource, subresource) and CPU time of the processes involved,
per object of the phase (e.g. a Credential's create path: the client's POST plus the operator's
reads and writes). The request counter covers every client of the apiserver (a bench's own
reader, the controller-manager's garbage collector), so the writes are the clearer figure; a
bench that runs a reader says so next to the reads.

    before, cpu = apiserver_cost.snapshot(api), apiserver_cost.Cpu({"apiserver": pid, ...})
    ...                                          # the phase
    print(apiserver_cost.describe(before, apiserver_cost.snapshot(api), count))
    print(cpu.describe(count))                   # ms per object, by process
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes import client

Key = tuple[str, str, str]
"""(verb, resource, subresource)."""

_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')
READS = frozenset({"GET", "LIST", "WATCH"})


def parse(exposition: str) -> Counter[Key]:
    """Requests so far by (verb, resource, subresource), from the apiserver's /metrics text."""
    counts: Counter[Key] = Counter()
    for line in exposition.splitlines():
        sample = _SAMPLE.match(line)
        if sample is None:
            continue
        labels = dict(_LABEL.findall(sample.group("labels")))
        key = (labels.get("verb", ""), labels.get("resource", ""),
               labels.get("subresource", ""))
        counts[key] += int(float(sample.group("value")))
    return counts


def snapshot(api: client.ApiClient) -> Counter[Key]:
    """The apiserver's request counters now (as the cluster admin)."""
    response: Any = api.call_api("GET", f"{api.configuration.host}/metrics")
    response.read()
    return parse(response.data.decode())


def per_object(before: Counter[Key], after: Counter[Key], count: int) -> dict[Key, float]:
    """Requests made between the snapshots, per object of the phase, most first."""
    made = {key: after[key] - before.get(key, 0) for key in after}
    return dict(sorted(((key, n / count) for key, n in made.items() if n > 0),
                       key=lambda item: -item[1]))


def describe(before: Counter[Key], after: Counter[Key], count: int, *,
             minimum: float = 0.05) -> str:
    """One line of writes and one of reads per object, e.g. `writes 2.05: APPLY secrets 1.00,
    PATCH credentials/status 1.00, ...`; entries under `minimum` are left out."""
    figures = per_object(before, after, count)

    def line(title: str, keep: bool) -> str:
        chosen = {k: v for k, v in figures.items() if (k[0] in READS) != keep}
        shown = ", ".join(f"{verb} {resource}{'/' + sub if sub else ''} {value:.2f}"
                          for (verb, resource, sub), value in chosen.items()
                          if value >= minimum)
        return f"{title} {sum(chosen.values()):.2f}: {shown or '-'}"

    return f"{line('writes', True)}\n{line('reads', False)}"


def as_json(before: Counter[Key], after: Counter[Key], count: int) -> dict[str, float]:
    """`per_object` keyed by "VERB resource[/subresource]", for --json."""
    return {f"{verb} {resource}{'/' + sub if sub else ''}": round(value, 3)
            for (verb, resource, sub), value in per_object(before, after, count).items()}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cpu:
    """CPU seconds each named process spends from construction on, and the load average."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.load = os.getloadavg()[0]

    def per_object(self, count: int) -> dict[str, float]:
        """Milliseconds of CPU per object of the phase, by process, so far."""
        return {name: round(1000 * (cpu_seconds(pid) - self.start[name]) / count, 2)
                for name, pid in self.pids.items()}

    def describe(self, count: int) -> str:
        spent = self.per_object(count)
        return ("CPU ms " + ", ".join(f"{name} {ms:.1f}" for name, ms in spent.items())
                + f" (load average {self.load:.1f} -> {os.getloadavg()[0]:.1f})")
