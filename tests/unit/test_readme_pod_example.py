"""The README's hardened pod for credential exchange passes Tenantry's own admission rules."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml

from tests.conftest import REPO_ROOT


def test_the_readme_credentials_pod_is_admitted_by_our_rules() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index("A complete hardened pod:")
    example = re.search(r"```yaml\n(.*?)```", readme[start:], re.S)
    assert example is not None
    pod = yaml.safe_load(example.group(1))
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["credentials"]["emptyDir"]["medium"] == "Memory"
    token = volumes["tenantry-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "tenantry-api"
    result = subprocess.run([sys.executable, "-m", "tenantry", "check", "-o", "json", "-"],
                            input=example.group(1), capture_output=True, text=True, check=False,
                            cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
