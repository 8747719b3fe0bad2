"""The wrapper modules that make Kubernetes and etcd buildable from the Go module proxy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tenantry.devcluster import build


def test_kubernetes_wrapper_pins_kubernetes_and_replaces_every_staging_module() -> None:
    gomod = build.kubernetes_wrapper_gomod("1.35.4")
    assert "require k8s.io/kubernetes v1.35.4" in gomod
    replaced = re.findall(r"k8s.io/([a-z-]+) => k8s.io/\1 (v\S+)", gomod)
    assert {name for name, _ in replaced} == set(build.STAGING_MODULES)
    assert {version for _, version in replaced} == {"v0.35.4"}
    assert len(build.STAGING_MODULES) == 31


def test_etcd_wrapper_is_its_own_module() -> None:
    gomod = build.etcd_wrapper_gomod("3.6.16")
    assert "require go.etcd.io/etcd/server/v3 v3.6.16" in gomod
    assert "k8s.io" not in gomod


def test_cache_lives_outside_the_repository(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv("TENANTRY_CACHE_DIR", str(tmp_path / "cache"))
    binaries = build.expected_binaries("1.35.4", "3.6.16")
    for path in binaries.all():
        assert path.is_relative_to(tmp_path / "cache")
    assert binaries.kube_apiserver.parent.name == "bin"
    assert "1.35.4" in str(binaries.kube_apiserver) and "3.6.16" in str(binaries.etcd)


def test_missing_go_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("TENANTRY_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(build, "_GO_FALLBACKS", ())
    with pytest.raises(build.BuildError, match=r"no Go toolchain found.*install"):
        build.ensure_binaries(progress=lambda _: None)


def test_kubectl_is_cached_apart_from_the_control_plane(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    monkeypatch.setenv("TENANTRY_CACHE_DIR", str(tmp_path / "cache"))
    kubectl = build.kubectl_path("1.35.4")
    assert kubectl.is_relative_to(tmp_path / "cache") and "1.35.4" in str(kubectl)
    # Its own folder: adding it neither invalidates nor rebuilds the control plane's binaries.
    assert not kubectl.is_relative_to(build.binaries_dir("1.35.4", "3.6.16").parent)


def test_a_cached_kubectl_needs_no_go(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TENANTRY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(build, "_GO_FALLBACKS", ())
    cached = build.kubectl_path()
    cached.parent.mkdir(parents=True)
    cached.write_text("")
    assert build.ensure_kubectl(progress=lambda _: None) == cached
    cached.unlink()
    with pytest.raises(build.BuildError, match=r"no Go toolchain found"):
        build.ensure_kubectl(progress=lambda _: None)
