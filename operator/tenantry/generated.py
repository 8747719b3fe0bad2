"""Directories of generated YAML (crds/, policies/): write them, or tell how they drifted."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def kustomization(files: Mapping[str, str]) -> dict[str, Any]:
    """A kustomization.yaml listing `files` as its resources."""
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": list(files)}


def write(directory: Path, files: Mapping[str, str]) -> list[Path]:
    """Write each file name -> content into `directory`; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in files.items():
        path = directory / name
        path.write_text(content)
        written.append(path)
    return written


def drift(directory: Path, files: Mapping[str, str]) -> list[str]:
    """Names of `files` that are missing in `directory` or differ there."""
    return [name for name, content in files.items()
            if not (directory / name).exists() or (directory / name).read_text() != content]
