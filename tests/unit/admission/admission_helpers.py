"""Shared by the admission tests: Pod Security Admission's fixture pods, a fully hardened pod,
and wrapping a pod in each pod-template kind.

The fixture pods are `test/testdata/{baseline,restricted}/v1.35/{pass,fail}/*.yaml` of
k8s.io/pod-security-admission at the pinned version, located through `go env GOMODCACHE` (the Go
module cache of the control-plane build).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tenantry.admission.violation import Level
from tenantry.devcluster import build
from tenantry.model.tenant import POD_SECURITY_VERSION

LEVELS = (Level.BASELINE, Level.RESTRICTED)


@dataclasses.dataclass(frozen=True)
class PsaCase:
    """One fixture pod and the verdict PSA gives it at its level."""

    level: Level
    verdict: str  # "pass" or "fail"
    path: Path
    pod: dict[str, Any]

    @property
    def check(self) -> str:
        """The PSA check the fixture exercises: its file name without the trailing number."""
        return self.path.stem.rstrip("0123456789")

    def __str__(self) -> str:
        return f"{self.level}/{self.verdict}/{self.path.name}"


@functools.cache
def fixtures_root() -> tuple[Path | None, str]:
    """The testdata directory, or None and the reason it cannot be used."""
    try:
        root = build.pod_security_fixtures_dir()
    except (build.BuildError, OSError, subprocess.CalledProcessError) as error:
        return None, f"cannot locate the Go module cache (needs a Go toolchain): {error}"
    if not root.is_dir():
        return None, (f"Pod Security fixtures not in the Go module cache ({root}); "
                      "`tenantry dev build` fetches them with the control plane's modules")
    return root, ""


@functools.cache
def psa_cases() -> tuple[PsaCase, ...]:
    """Every fixture pod of both levels, or () when the fixtures are unavailable."""
    root, _ = fixtures_root()
    if root is None:
        return ()
    cases = []
    for level in LEVELS:
        for verdict in ("pass", "fail"):
            for path in sorted((root / level / POD_SECURITY_VERSION / verdict).glob("*.yaml")):
                cases.append(PsaCase(level, verdict, path, yaml.safe_load(path.read_text())))
    return tuple(cases)


# kind -> (apiVersion, prefix the pod's paths get inside it)
WRAPPERS: dict[str, tuple[str, str]] = {
    "Deployment": ("apps/v1", "spec.template."),
    "StatefulSet": ("apps/v1", "spec.template."),
    "DaemonSet": ("apps/v1", "spec.template."),
    "ReplicaSet": ("apps/v1", "spec.template."),
    "ReplicationController": ("v1", "spec.template."),
    "Job": ("batch/v1", "spec.template."),
    "CronJob": ("batch/v1", "spec.jobTemplate.spec.template."),
    "PodTemplate": ("v1", "template."),
}


def wrap(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    """`pod` as the template of a `kind` object."""
    api_version, _ = WRAPPERS[kind]
    template = {"metadata": copy.deepcopy(pod.get("metadata", {})),
                "spec": copy.deepcopy(pod["spec"])}
    metadata = {"name": "wrapped", "namespace": "team-a"}
    if kind == "PodTemplate":
        return {"apiVersion": api_version, "kind": kind, "metadata": metadata,
                "template": template}
    if kind == "CronJob":
        return {"apiVersion": api_version, "kind": kind, "metadata": metadata,
                "spec": {"schedule": "* * * * *",
                         "jobTemplate": {"spec": {"template": template}}}}
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata,
            "spec": {"template": template}}


def hardened_container(name: str, image: str = "registry.example/app:1.0") -> dict[str, Any]:
    """A container that meets every rule on its own."""
    return {
        "name": name,
        "image": image,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def hardened_pod() -> dict[str, Any]:
    """A pod that meets every rule: the pod sets runAsNonRoot and seccomp for all containers."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hardened", "namespace": "team-a"},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "initContainers": [hardened_container("init")],
            "containers": [hardened_container("app"), hardened_container("sidecar")],
            "volumes": [],
        },
    }
