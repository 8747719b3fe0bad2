"""Keyring loading (file, env, mounted Secret directory), fail-closed errors, rotation steps."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import pytest

from tenantry.crypto import errors, keyring

KEY_1 = bytes(range(1, 33))
KEY_2 = bytes(range(101, 133))
B64_1 = base64.b64encode(KEY_1).decode()
B64_2 = base64.b64encode(KEY_2).decode()


def _write_mounted_secret(directory: Path, data: dict[str, str]) -> None:
    """Lay files out the way the kubelet mounts a Secret: symlinks through `..data`."""
    payload = directory / "..2026_01_01_00_00_00.000000001"
    payload.mkdir()
    for name, value in data.items():
        (payload / name).write_text(value)
    (directory / "..data").symlink_to(payload.name)
    for name in data:
        (directory / name).symlink_to(Path("..data") / name)


# -- loading -----------------------------------------------------------------------------------

def test_json_file_loads_with_primary_and_older_versions(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps({"primary": "v2", "keys": {"v1": B64_1, "v2": B64_2}}))

    ring = keyring.load_file(path)

    assert ring.primary == "v2"
    assert ring.versions == ("v1", "v2")
    assert ring.key("v1") == KEY_1
    assert ring.key("v2") == KEY_2


def test_yaml_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "keyring.yaml"
    path.write_text(f"primary: v1\nkeys:\n  v1: {B64_1}\n")

    assert keyring.load_file(path).key("v1") == KEY_1


def test_dumps_then_load_gives_the_same_keyring(tmp_path: Path) -> None:
    ring = keyring.add_version(keyring.generate())
    path = tmp_path / "keyring.json"
    path.write_text(keyring.dumps(ring))

    assert keyring.load(path) == ring


def test_mounted_secret_directory_loads(tmp_path: Path) -> None:
    _write_mounted_secret(tmp_path, {"v1": B64_1 + "\n", "v2": B64_2, "primary": "v2\n"})

    ring = keyring.load(tmp_path)

    assert ring.primary == "v2"
    assert ring.key("v1") == KEY_1


def test_secret_data_round_trips_through_a_mounted_directory(tmp_path: Path) -> None:
    ring = keyring.add_version(keyring.generate())
    _write_mounted_secret(tmp_path, keyring.to_secret_data(ring))

    assert keyring.load_directory(tmp_path) == ring


def test_env_var_may_name_a_file_or_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps({"primary": "v1", "keys": {"v1": B64_1}}))
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    _write_mounted_secret(mounted, {"v2": B64_2, "primary": "v2"})

    assert keyring.from_env({keyring.ENV_VAR: str(path)}).key("v1") == KEY_1
    assert keyring.from_env({keyring.ENV_VAR: str(mounted)}).key("v2") == KEY_2


def test_env_var_unset_says_which_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(keyring.ENV_VAR, raising=False)

    with pytest.raises(errors.KeyringError, match=keyring.ENV_VAR):
        keyring.from_env()


# -- failing closed ----------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "problem"), [
    ({"primary": "v3", "keys": {"v1": B64_1, "v2": B64_2}}, "primary version 'v3' is not among"),
    ({"primary": "v1", "keys": {"v1": B64_1, "v2": "c2hvcnQ="}}, "key 'v2' is 5 bytes"),
    ({"primary": "v1", "keys": {"v1": B64_1, "v2": B64_2[:-2] + "!!"}},
     "key 'v2' is not valid base64"),
    ({"primary": "v1", "keys": {"v1": B64_1, "v2": base64.b64encode(bytes(32)).decode()}},
     "key 'v2' is one byte repeated"),
    ({"primary": "v1", "keys": {"v1": B64_1, "V2": B64_2}}, "key version 'V2' is not a valid"),
    ({"primary": "v1", "keys": {}}, "'keys' must be a non-empty mapping"),
    ({"keys": {"v1": B64_1}}, "no 'primary' field"),
    ({"primay": "v1", "keys": {"v1": B64_1}}, "unknown field"),
    (["v1", B64_1], "expected a mapping"),
])
def test_malformed_keyring_file_is_refused_naming_file_and_problem(
        tmp_path: Path, content: object, problem: str) -> None:
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps(content))

    with pytest.raises(errors.KeyringError) as caught:
        keyring.load_file(path)

    message = str(caught.value)
    assert str(path) in message
    assert problem in message
    assert B64_1 not in message and B64_2 not in message


def test_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"

    with pytest.raises(errors.KeyringError, match=re.escape(f"{path}: does not exist")):
        keyring.load(path)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keyring.yaml"
    path.write_text("")

    with pytest.raises(errors.KeyringError, match="is empty"):
        keyring.load_file(path)


def test_syntax_error_gives_the_place_but_never_the_line(tmp_path: Path) -> None:
    # YAML's own message quotes the broken line; here that line holds a key.
    path = tmp_path / "keyring.yaml"
    path.write_text(f'primary: v1\nkeys:\n  v1: "{B64_1}\n')

    with pytest.raises(errors.KeyringError, match=r"not valid JSON or YAML at line \d+") as caught:
        keyring.load_file(path)

    # YAML shortens long lines in its snippets, so look for any fragment of the key, not all of it.
    fragments = {B64_1[start:start + 8] for start in range(len(B64_1) - 8)}
    assert not any(fragment in str(caught.value) for fragment in fragments)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(("data", "problem"), [
    ({"v1": B64_1}, "has no 'primary' file"),
    ({"primary": "v1"}, "holds no key versions"),
    ({"v1": B64_1, "v1.txt": B64_2, "primary": "v1"}, "file 'v1.txt': key version 'v1.txt'"),
    ({"v1": "not base64 at all", "primary": "v1"}, "file 'v1': key 'v1' is not valid base64"),
    ({"v1": B64_1, "primary": "v7"}, "primary version 'v7' is not among the keys (v1)"),
])
def test_malformed_secret_directory_is_refused(
        tmp_path: Path, data: dict[str, str], problem: str) -> None:
    _write_mounted_secret(tmp_path, data)

    with pytest.raises(errors.KeyringError) as caught:
        keyring.load_directory(tmp_path)

    assert f"keyring directory {tmp_path}" in str(caught.value)
    assert problem in str(caught.value)
    assert B64_1 not in str(caught.value)


def test_repr_and_str_show_versions_but_no_key_material() -> None:
    ring = keyring.Keyring("v2", {"v1": KEY_1, "v2": KEY_2})

    for text in (repr(ring), str(ring), f"{ring}"):
        assert "v1" in text and "v2" in text
        for key in (KEY_1, KEY_2):
            assert key.hex() not in text
            assert base64.b64encode(key).decode() not in text
            assert repr(key) not in text


def test_unknown_version_lookup_names_the_version_and_what_is_held() -> None:
    ring = keyring.Keyring("v1", {"v1": KEY_1})

    with pytest.raises(errors.UnknownKeyVersionError, match=r"'v9' is not in the keyring.*v1"):
        ring.key("v9")


@pytest.mark.parametrize("version", ["", "V1", "v1.0", "primary", "-v1", "v" * 33, "v 1"])
def test_invalid_version_names_are_refused(version: str) -> None:
    with pytest.raises(errors.KeyringError):
        keyring.generate(version)


# -- rotation steps ----------------------------------------------------------------------------

def test_generate_makes_distinct_random_keys() -> None:
    first, second = keyring.generate(), keyring.generate()

    assert first.key("v1") != second.key("v1")
    assert len(first.key("v1")) == keyring.KEY_SIZE


def test_add_promote_retire_is_the_rotation_sequence() -> None:
    start = keyring.generate()

    added = keyring.add_version(start)
    assert added.versions == ("v1", "v2")
    assert added.primary == "v1", "adding must not switch encryption before replicas know the key"

    promoted = keyring.promote(added, "v2")
    assert promoted.primary == "v2"
    assert promoted.key("v1") == start.key("v1"), "the old version must still decrypt"

    retired = keyring.retire(promoted, "v1")
    assert retired.versions == ("v2",)
    assert retired.key("v2") == added.key("v2")

    # Every step returned a new value; the inputs are untouched.
    assert start.versions == ("v1",)
    assert added.primary == "v1"
    assert promoted.versions == ("v1", "v2")


def test_retiring_the_primary_is_refused() -> None:
    with pytest.raises(errors.KeyringError, match="cannot retire 'v1': it is the primary"):
        keyring.retire(keyring.generate(), "v1")


def test_promoting_or_retiring_an_unknown_version_is_refused() -> None:
    ring = keyring.generate()

    with pytest.raises(errors.UnknownKeyVersionError, match="'v5'"):
        keyring.promote(ring, "v5")
    with pytest.raises(errors.UnknownKeyVersionError, match="'v5'"):
        keyring.retire(ring, "v5")


def test_adding_an_existing_version_is_refused() -> None:
    with pytest.raises(errors.KeyringError, match="'v1' already exists"):
        keyring.add_version(keyring.generate(), "v1")


def test_versions_sort_naturally_and_next_version_counts_on() -> None:
    ring = keyring.Keyring("v9", {"v10": KEY_1, "v9": KEY_2, "v2": os.urandom(32)})

    assert ring.versions == ("v2", "v9", "v10")
    assert keyring.next_version(ring) == "v11"
    assert keyring.add_version(ring).versions[-1] == "v11"


def test_a_key_removed_by_a_secret_update_is_skipped_while_its_link_still_dangles(
        tmp_path: Path) -> None:
    """The kubelet swaps `..data` to the new payload first and unlinks the removed keys' links
    after: a reader in between sees a dangling `v1` link, which is a key that is gone, not a
    broken keyring. A real file that is not regular is still refused."""
    _stage_removal_of_v1(tmp_path)
    (tmp_path / "..data_tmp").replace(tmp_path / "..data")  # v1's link now dangles

    ring = keyring.load_directory(tmp_path)

    assert ring.versions == ("v2",) and ring.primary == "v2"
    (tmp_path / "v1").unlink()
    (tmp_path / "v1").mkdir()
    with pytest.raises(errors.KeyringError, match="file 'v1': is not a regular file"):
        keyring.load_directory(tmp_path)


def _stage_removal_of_v1(tmp_path: Path) -> None:
    """A mounted Secret holding v1 and v2, and the kubelet's next version (v2 only) staged as
    `..data_tmp`, ready to be swapped in."""
    _write_mounted_secret(tmp_path, {"v1": B64_1, "v2": B64_2, "primary": "v2"})
    newer = tmp_path / "..2026_01_02_00_00_00.000000001"
    newer.mkdir()
    (newer / "v2").write_text(B64_2)
    (newer / "primary").write_text("v2")
    (tmp_path / "..data_tmp").symlink_to(newer.name)


@pytest.mark.parametrize("swapped_during", ["is_file", "read_text"])
def test_a_key_whose_link_starts_dangling_while_it_is_read_is_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swapped_during: str) -> None:
    """The same kubelet swap landing between the loader's checks of one entry (CI met it in
    the MasterKey e2e: the link still resolved when looked at, was gone when read)."""
    _stage_removal_of_v1(tmp_path)
    real = getattr(Path, swapped_during)
    swapped: list[bool] = []

    def swap_first(self: Path, *args: object, **kwargs: object) -> object:
        if self.name == "v1" and not swapped:
            swapped.append(True)
            (tmp_path / "..data_tmp").replace(tmp_path / "..data")  # v1 dangles from now
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, swapped_during, swap_first)
    ring = keyring.load_directory(tmp_path)

    assert swapped and ring.versions == ("v2",) and ring.primary == "v2"


@pytest.mark.parametrize("removed_during", ["is_file", "read_text"])
def test_a_key_whose_link_is_unlinked_while_it_is_read_is_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, removed_during: str) -> None:
    """The kubelet's whole update (swap, then unlink the removed key's link) landing between
    the loader's listing of the directory and its checks of `v1`: gone is removed, too."""
    _stage_removal_of_v1(tmp_path)
    real = getattr(Path, removed_during)
    removed: list[bool] = []

    def update_first(self: Path, *args: object, **kwargs: object) -> object:
        if self.name == "v1" and not removed:
            removed.append(True)
            (tmp_path / "..data_tmp").replace(tmp_path / "..data")
            (tmp_path / "v1").unlink()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, removed_during, update_first)
    ring = keyring.load_directory(tmp_path)

    assert removed and ring.versions == ("v2",) and ring.primary == "v2"
