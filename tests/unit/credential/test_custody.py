"""Key custody: keys from files, clear key-free errors, reload on change, the published key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from tenantry.crypto import custody, errors, keyring, sealing

GARBAGE = "GARBAGE-KEY-MATERIAL-d41d8cd98f00b204"


def _write_ring(path: Path, ring: keyring.Keyring) -> None:
    path.write_text(keyring.dumps(ring))


def _touch_later(path: Path) -> None:
    # Some filesystems keep mtime at a coarse resolution: make the change visible.
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 10_000_000))


def test_options_from_the_environment(tmp_path: Path) -> None:
    options = custody.KeyOptions.from_env({custody.ENV_KEYRING: str(tmp_path / "ring"),
                                           custody.ENV_SEALING_KEY: " "})

    assert options == custody.KeyOptions(keyring=tmp_path / "ring", sealing_key=None)
    assert custody.operator_namespace({}) == "tenantry-system"
    assert custody.operator_namespace({custody.ENV_NAMESPACE: "ops"}) == "ops"


def test_no_keyring_configured_says_how_to_configure_one() -> None:
    source = custody.KeySource(custody.KeyOptions())

    with pytest.raises(errors.KeyringError, match=r"--keyring FILE or \$TENANTRY_KEYRING_FILE"):
        source.keyring()
    with pytest.raises(errors.SealingKeyError, match="--sealing-key FILE"):
        source.sealing_keys()


def test_missing_keyring_file_is_reported_with_its_path(tmp_path: Path) -> None:
    source = custody.KeySource(custody.KeyOptions(keyring=tmp_path / "absent.json"))

    with pytest.raises(errors.KeyringError, match=r"absent\.json: does not exist"):
        source.keyring()


@pytest.mark.parametrize("content", [
    GARBAGE,
    f'{{"primary": "v1", "keys": {{"v1": "{GARBAGE}"}}}}',
    f"primary: v1\nkeys:\n  v1: [{GARBAGE}\n",
])
def test_malformed_keyring_error_never_quotes_the_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "ring.json"
    path.write_text(content)
    source = custody.KeySource(custody.KeyOptions(keyring=path))

    with pytest.raises(errors.KeyringError) as raised:
        source.keyring()
    assert GARBAGE not in str(raised.value)
    assert str(path) in str(raised.value)
    assert GARBAGE not in " ".join(source.describe())


def test_keyring_is_reloaded_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "ring.json"
    first = keyring.generate()
    _write_ring(path, first)
    source = custody.KeySource(custody.KeyOptions(keyring=path))
    assert source.keyring() == first

    second = keyring.add_version(first)
    _write_ring(path, second)
    _touch_later(path)
    assert source.keyring() == second

    path.unlink()
    with pytest.raises(errors.KeyringError, match="does not exist"):
        source.keyring()
    _write_ring(path, first)
    assert source.keyring() == first


def test_keyring_from_a_mounted_secret_directory(tmp_path: Path) -> None:
    # Kubernetes mounts a Secret as files behind a `..data` symlink it swaps on update.
    ring = keyring.add_version(keyring.generate())
    data = tmp_path / "..2026_01_01"
    data.mkdir()
    for name, value in keyring.to_secret_data(ring).items():
        (data / name).write_text(value)
        (tmp_path / name).symlink_to(Path("..data") / name)
    (tmp_path / "..data").symlink_to(data.name)
    source = custody.KeySource(custody.KeyOptions(keyring=tmp_path))

    assert source.keyring() == ring
    assert "primary v1, versions v1, v2" in source.describe()[0]


def test_an_empty_secret_mount_fails_closed(tmp_path: Path) -> None:
    # `optional: true` and no Secret: an empty directory.
    source = custody.KeySource(custody.KeyOptions(keyring=tmp_path))

    with pytest.raises(errors.KeyringError, match="holds no key versions"):
        source.keyring()
    assert "every Credential will report KeyringUnavailable" in source.describe()[0]


def test_sealing_keys_first_published_all_unseal(tmp_path: Path) -> None:
    new, old = sealing.generate_private_key(), sealing.generate_private_key()
    path = tmp_path / "sealing.pem"
    path.write_bytes(sealing.private_key_to_pem(new) + sealing.private_key_to_pem(old))
    keys = custody.KeySource(custody.KeyOptions(sealing_key=path)).sealing_keys()

    assert keys.fingerprint == sealing.fingerprint(new)
    target = sealing.Target("ns", "name", "field")
    for key in (new, old):
        sealed = sealing.seal(key.public_key(), target, b"v")
        assert keys.for_hint(sealing.recipient_hint(sealed)) is not None
        assert sealing.unseal(keys.for_hint(sealing.recipient_hint(sealed)), target,
                              sealed) == b"v"
    assert GARBAGE not in repr(keys)


@pytest.mark.parametrize("content", [
    GARBAGE.encode(),
    b"-----BEGIN PRIVATE KEY-----\n" + GARBAGE.encode() + b"\n-----END PRIVATE KEY-----\n",
])
def test_malformed_sealing_key_error_never_quotes_the_file(tmp_path: Path,
                                                            content: bytes) -> None:
    path = tmp_path / "sealing.pem"
    path.write_bytes(content)

    with pytest.raises(errors.SealingKeyError) as raised:
        custody.KeySource(custody.KeyOptions(sealing_key=path)).sealing_keys()
    assert GARBAGE not in str(raised.value)
    assert str(path) in str(raised.value)


def test_sealing_key_directory_is_refused_with_advice(tmp_path: Path) -> None:
    with pytest.raises(errors.SealingKeyError, match="point at the PEM file inside it"):
        custody.load_sealing_keys(tmp_path)


def test_public_key_configmap_round_trip(private_key: x25519.X25519PrivateKey) -> None:
    keys = custody.SealingKeys((private_key,))
    configmap = custody.public_key_configmap("tenantry-system", keys)

    assert configmap["metadata"] == {
        "name": "tenantry-sealing-public-key", "namespace": "tenantry-system",
        "labels": {"app.kubernetes.io/managed-by": "tenantry",
                   "app.kubernetes.io/name": "tenantry",
                   "app.kubernetes.io/component": "operator"}}
    assert "PRIVATE" not in str(configmap)
    assert configmap["data"]["fingerprint"] == keys.fingerprint
    public = custody.public_key_from_configmap(configmap)
    assert sealing.fingerprint(public) == keys.fingerprint


def test_a_configmap_whose_key_does_not_match_its_fingerprint_is_refused(
        private_key: x25519.X25519PrivateKey) -> None:
    configmap = custody.public_key_configmap("ns", custody.SealingKeys((private_key,)))
    other = custody.public_key_configmap(
        "ns", custody.SealingKeys((sealing.generate_private_key(),)))
    configmap["data"]["publicKey.pem"] = other["data"]["publicKey.pem"]

    with pytest.raises(errors.SealingKeyError, match="does not match its stated fingerprint"):
        custody.public_key_from_configmap(configmap)
    with pytest.raises(errors.SealingKeyError, match="holds no"):
        custody.public_key_from_configmap({"data": {}})
