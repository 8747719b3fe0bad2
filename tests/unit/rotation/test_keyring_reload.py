"""The keyring's consumers pick up a changed mounted Secret without a restart, and a backup of
it is checked against the check values a MasterKey policy shows."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from tenantry.crypto import custody, errors, keyring
from tests.unit.rotation import kubelet


def _mount(directory: Path, ring: keyring.Keyring) -> None:
    kubelet.write(directory, keyring.to_secret_data(ring))


def test_the_operator_reads_each_kubelet_update_of_the_mounted_keyring(tmp_path: Path) -> None:
    mounted = tmp_path / "keyring"
    ring = keyring.generate("v1")
    _mount(mounted, ring)
    source = custody.KeySource(custody.KeyOptions(keyring=mounted))
    assert source.keyring() == ring

    added = keyring.add_version(ring)
    _mount(mounted, added)
    assert source.keyring().versions == ("v1", "v2") and source.keyring().primary == "v1"
    promoted = keyring.promote(added, "v2")
    _mount(mounted, promoted)
    assert source.keyring().primary == "v2"
    retired = keyring.retire(promoted, "v1")
    _mount(mounted, retired)
    assert source.keyring() == retired
    assert source.keyring().versions == ("v2",)


def test_a_broken_update_fails_closed_and_the_next_good_one_is_read(tmp_path: Path) -> None:
    mounted = tmp_path / "keyring"
    ring = keyring.generate("v1")
    _mount(mounted, ring)
    source = custody.KeySource(custody.KeyOptions(keyring=mounted))
    source.keyring()
    kubelet.write(mounted, {"v1": "not base64!", "primary": "v1"})
    with pytest.raises(errors.KeyringError, match="not valid base64") as raised:
        source.keyring()
    assert "not base64!" not in str(raised.value)
    _mount(mounted, ring)
    assert source.keyring() == ring


def _manifest(ring: keyring.Keyring) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "tenantry-keyring", "namespace": "tenantry-system"},
            "data": {k: base64.b64encode(v.encode()).decode()
                     for k, v in keyring.to_secret_data(ring).items()}}


@pytest.mark.parametrize("form", ["secret-yaml", "keyring-file", "directory"])
def test_a_backup_in_any_form_it_is_kept_in_loads(tmp_path: Path, form: str) -> None:
    ring = keyring.add_version(keyring.generate("v1"))
    path = tmp_path / "backup"
    if form == "secret-yaml":
        path.write_text(yaml.safe_dump(_manifest(ring)))
    elif form == "keyring-file":
        path.write_text(keyring.dumps(ring))
    else:
        _mount(path, ring)
    assert keyring.load_backup(path) == ring


def test_a_backup_missing_a_version_or_holding_another_key_is_no_backup() -> None:
    ring = keyring.add_version(keyring.generate("v1"))
    expected = keyring.check_values(ring)
    assert keyring.backup_problems(ring, expected) == []
    old = keyring.generate("v1")  # yesterday's backup: v1 only
    assert keyring.backup_problems(old, expected) == [
        f"its key version v1 is another key (check value {keyring.check_value(old, 'v1')}, "
        f"not {expected['v1']})", "it lacks key version v2"]
    # A forged backup naming the versions with keys of its own does not pass either.
    forged = keyring.add_version(keyring.generate("v1"), "v2")
    assert len(keyring.backup_problems(forged, expected)) == 2


def test_a_secret_manifest_that_is_not_base64_names_the_entry_not_its_value(
        tmp_path: Path) -> None:
    path = tmp_path / "backup.yaml"
    path.write_text(yaml.safe_dump({"kind": "Secret", "data": {"v1": "%%%secret%%%",
                                                               "primary": "djE="}}))
    with pytest.raises(errors.KeyringError, match="data 'v1' is not base64") as raised:
        keyring.load_backup(path)
    assert "%%%secret%%%" not in str(raised.value)
