"""Build the local control plane's binaries from pinned Go modules, once, into a cache.

No package registry reachable from our machines ships kube-apiserver, and `go install` cannot
build `k8s.io/kubernetes` directly (its go.mod replaces the staging modules with local folders).
So we write a throwaway wrapper module that requires `k8s.io/kubernetes` and replaces each staging
module with its published `v0.X.Y` twin, and a second one for etcd (kept apart so etcd's
dependency pins never move the apiserver's). Binaries land in
`$TENANTRY_CACHE_DIR/k8s-v<version>/bin` (default `~/.cache/tenantry/...`) and are reused.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

KUBERNETES_VERSION = "1.35.4"
ETCD_VERSION = "3.6.16"

# The staging modules of k8s.io/kubernetes 1.33-1.35; each is published as k8s.io/<name> v0.X.Y.
STAGING_MODULES = (
    "api", "apiextensions-apiserver", "apimachinery", "apiserver", "cli-runtime", "client-go",
    "cloud-provider", "cluster-bootstrap", "code-generator", "component-base",
    "component-helpers", "controller-manager", "cri-api", "cri-client", "csi-translation-lib",
    "dynamic-resource-allocation", "endpointslice", "externaljwt", "kms", "kube-aggregator",
    "kube-controller-manager", "kube-proxy", "kube-scheduler", "kubectl", "kubelet", "metrics",
    "mount-utils", "pod-security-admission", "sample-apiserver", "sample-cli-plugin",
    "sample-controller",
)

KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager")

Progress = Callable[[str], None]


class BuildError(RuntimeError):
    """The control plane could not be built; the message says what to do."""


def _stderr_progress(message: str) -> None:
    print(f"[tenantry devcluster] {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    """Where built binaries are kept, outside any repository."""
    configured = os.environ.get("TENANTRY_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tenantry"


@dataclasses.dataclass(frozen=True)
class Binaries:
    """Paths of the three control-plane executables."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path

    def all(self) -> tuple[Path, ...]:
        return (self.etcd, self.kube_apiserver, self.kube_controller_manager)


def binaries_dir(kubernetes_version: str = KUBERNETES_VERSION,
                 etcd_version: str = ETCD_VERSION) -> Path:
    return cache_root() / f"k8s-v{kubernetes_version}-etcd-v{etcd_version}" / "bin"


def expected_binaries(kubernetes_version: str = KUBERNETES_VERSION,
                      etcd_version: str = ETCD_VERSION) -> Binaries:
    directory = binaries_dir(kubernetes_version, etcd_version)
    return Binaries(
        etcd=directory / "etcd",
        kube_apiserver=directory / "kube-apiserver",
        kube_controller_manager=directory / "kube-controller-manager",
    )


def kubernetes_wrapper_gomod(kubernetes_version: str = KUBERNETES_VERSION) -> str:
    """go.mod of the wrapper module that makes k8s.io/kubernetes buildable from the proxy."""
    staging_version = "v0." + kubernetes_version.split(".", 1)[1]
    replaces = "\n".join(
        f"\tk8s.io/{name} => k8s.io/{name} {staging_version}" for name in STAGING_MODULES
    )
    return (
        "module tenantry.dev/k8sbuild\n\n"
        "go 1.25\n\n"
        f"require k8s.io/kubernetes v{kubernetes_version}\n\n"
        f"replace (\n{replaces}\n)\n"
    )


def etcd_wrapper_gomod(etcd_version: str = ETCD_VERSION) -> str:
    return (
        "module tenantry.dev/etcdbuild\n\n"
        "go 1.24\n\n"
        f"require go.etcd.io/etcd/server/v3 v{etcd_version}\n"
    )


def _version_ldflags(kubernetes_version: str) -> str:
    major, minor, _ = kubernetes_version.split(".")
    prefix = "k8s.io/component-base/version"
    return " ".join((
        "-s -w",
        f"-X {prefix}.gitVersion=v{kubernetes_version}",
        f"-X {prefix}.gitMajor={major}",
        f"-X {prefix}.gitMinor={minor}",
        f"-X {prefix}.gitTreeState=clean",
    ))


# Where Go lives when installed but not on PATH (official tarball, Debian's golang-go).
_GO_FALLBACKS = (Path("/usr/local/go/bin/go"), Path("/usr/lib/go/bin/go"))


def find_go() -> Path:
    go = shutil.which("go")
    if go is None:
        for candidate in _GO_FALLBACKS:
            if candidate.exists():
                return candidate
        raise BuildError(
            "no Go toolchain found on PATH. The local control plane is built from source with "
            "Go >= 1.25: install it (Debian: `apt-get install golang-1.25` or newer, or the "
            "official tarball from go.dev) and make sure `go` is on PATH, or point KUBECONFIG at "
            "an existing cluster instead."
        )
    return Path(go)


def _go_env(go: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Never let `go` fetch another toolchain: only the module proxy is reachable.
    env["GOTOOLCHAIN"] = "local"
    env["CGO_ENABLED"] = "0"
    env["GOFLAGS"] = "-mod=mod"
    env.setdefault("GOPATH", str(Path.home() / "go"))
    env["PATH"] = f"{go.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run_go(go: Path, args: list[str], workdir: Path, progress: Progress) -> None:
    progress(f"$ go {' '.join(args)}")
    result = subprocess.run(
        [str(go), *args], cwd=workdir, env=_go_env(go),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stdout.strip().splitlines()[-30:])
        raise BuildError(f"`go {' '.join(args)}` failed in {workdir}:\n{tail}")


def _build_module(go: Path, workdir: Path, gomod: str, version: str,
                  commands: dict[str, str], output_dir: Path, ldflags: str,
                  progress: Progress) -> None:
    """Resolve `commands` (binary name -> Go package) at `version` and build them."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "go.mod").write_text(gomod)
    _run_go(go, ["get", *[f"{pkg}@v{version}" for pkg in commands.values()]], workdir, progress)
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, pkg in commands.items():
        partial = output_dir / f".{name}.partial"
        _run_go(go, ["build", "-trimpath", f"-ldflags={ldflags}", "-o", str(partial), pkg],
                workdir, progress)
        # Rename into place so a half-written binary never looks like a cached one.
        partial.replace(output_dir / name)


def ensure_binaries(kubernetes_version: str = KUBERNETES_VERSION,
                    etcd_version: str = ETCD_VERSION,
                    progress: Progress = _stderr_progress) -> Binaries:
    """Return the cached binaries, building whatever is missing first."""
    wanted = expected_binaries(kubernetes_version, etcd_version)
    if all(path.exists() for path in wanted.all()):
        return wanted
    go = find_go()
    out = binaries_dir(kubernetes_version, etcd_version)
    work = out.parent / "src"
    started = time.monotonic()
    if not wanted.etcd.exists():
        progress(f"building etcd v{etcd_version} (first run only; cached in {out})")
        _build_module(
            go, work / "etcd", etcd_wrapper_gomod(etcd_version), etcd_version,
            {"etcd": "go.etcd.io/etcd/server/v3"}, out, "-s -w", progress,
        )
    if not (wanted.kube_apiserver.exists() and wanted.kube_controller_manager.exists()):
        progress(
            f"building kube-apiserver and kube-controller-manager v{kubernetes_version} "
            "(first run only: 10-25 minutes on 2 cores, ~2 GiB RAM, ~1 GB of Go modules)"
        )
        _build_module(
            go, work / "kubernetes", kubernetes_wrapper_gomod(kubernetes_version),
            kubernetes_version,
            {cmd: f"k8s.io/kubernetes/cmd/{cmd}" for cmd in KUBE_COMMANDS},
            out, _version_ldflags(kubernetes_version), progress,
        )
    progress(f"control plane binaries ready in {time.monotonic() - started:.0f}s: {out}")
    return wanted


def kubectl_path(kubernetes_version: str = KUBERNETES_VERSION) -> Path:
    """Where the cached kubectl lives: its own folder, so adding it never invalidates (or
    rebuilds) the control plane's binaries."""
    return cache_root() / f"kubectl-v{kubernetes_version}" / "bin" / "kubectl"


def ensure_kubectl(kubernetes_version: str = KUBERNETES_VERSION,
                   progress: Progress = _stderr_progress) -> Path:
    """Return the cached kubectl of the control plane's version, building it first if missing.

    The real client, not a reimplementation, so tests see what `kubectl describe` and friends
    really show. Built from `k8s.io/kubernetes/cmd/kubectl` through the same wrapper module as
    the apiserver, so every dependency is pinned identically.
    """
    wanted = kubectl_path(kubernetes_version)
    if wanted.exists():
        return wanted
    go = find_go()
    started = time.monotonic()
    progress(f"building kubectl v{kubernetes_version} (first run only; cached in "
             f"{wanted.parent})")
    _build_module(
        go, wanted.parent.parent / "src", kubernetes_wrapper_gomod(kubernetes_version),
        kubernetes_version, {"kubectl": "k8s.io/kubernetes/cmd/kubectl"},
        wanted.parent, _version_ldflags(kubernetes_version), progress,
    )
    progress(f"kubectl ready in {time.monotonic() - started:.0f}s: {wanted}")
    return wanted


PROMETHEUS_VERSION = "0.316.0"
"""Prometheus' module version whose promtool checks the alerting rules in manifests/monitoring."""


def promtool_path(prometheus_version: str = PROMETHEUS_VERSION) -> Path:
    """Where the cached promtool lives (a folder of its own, like kubectl's)."""
    return cache_root() / f"promtool-v{prometheus_version}" / "bin" / "promtool"


def ensure_promtool(prometheus_version: str = PROMETHEUS_VERSION,
                    progress: Progress = _stderr_progress) -> Path:
    """Return the cached promtool, building it first if missing: Prometheus' own checker for
    rules files, so the shipped alerts are validated by the tool Prometheus will load them with.
    `go install module@version` builds it with the dependencies its go.mod pins."""
    wanted = promtool_path(prometheus_version)
    if wanted.exists():
        return wanted
    go = find_go()
    started = time.monotonic()
    progress(f"building promtool v{prometheus_version} (first run only; cached in "
             f"{wanted.parent})")
    wanted.parent.mkdir(parents=True, exist_ok=True)
    env = _go_env(go)
    env.pop("GOFLAGS", None)  # `go install pkg@version` runs outside any module
    env["GOBIN"] = str(wanted.parent)
    target = f"github.com/prometheus/prometheus/cmd/promtool@v{prometheus_version}"
    progress(f"$ go install {target}")
    result = subprocess.run([str(go), "install", target], cwd=wanted.parent, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            check=False)
    if result.returncode != 0 or not wanted.exists():
        tail = "\n".join(result.stdout.strip().splitlines()[-30:])
        raise BuildError(f"`go install {target}` failed:\n{tail}")
    progress(f"promtool ready in {time.monotonic() - started:.0f}s: {wanted}")
    return wanted


def gomodcache() -> Path:
    go = find_go()
    result = subprocess.run(
        [str(go), "env", "GOMODCACHE"], env=_go_env(go),
        capture_output=True, text=True, check=True,
    )
    return Path(result.stdout.strip())


def pod_security_fixtures_dir(kubernetes_version: str = KUBERNETES_VERSION) -> Path:
    """Pod Security Admission's public pass/fail pods, from the module cache of the build."""
    staging_version = "v0." + kubernetes_version.split(".", 1)[1]
    return gomodcache() / f"k8s.io/pod-security-admission@{staging_version}" / "test" / "testdata"
