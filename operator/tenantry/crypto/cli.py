"""`tenantry keyring ...`, `tenantry sealing-key ...` and `tenantry seal`: the operator's keys,
and sealing values offline for GitOps.

`register(subparsers)` adds the commands to the main `tenantry` parser; `add_key_options` and
`key_options` give `tenantry operator run` its `--keyring` and `--sealing-key`; `main(argv)` runs
the commands standalone (``python -m tenantry.crypto.cli``).

    tenantry keyring init --output keyring.json        a new keyring file (mode 0600)
    tenantry keyring init --secret | kubectl apply -f- the same as a Secret for the operator
    tenantry keyring add-version --keyring FILE        a new version (promote with --promote)
    tenantry keyring show --keyring PATH               versions and primary (no key bytes)
    tenantry keyring confirm-backup NS/NAME --backup FILE
                                                       a MasterKey rotation's backup checked
    tenantry sealing-key init --output key.pem         a new X25519 sealing key (or --secret)
    tenantry sealing-key public --sealing-key key.pem  its public key, for `seal --public-key`
    printf %s "$TOKEN" | tenantry seal --fetch-key --namespace acme-prod --name payments-api \\
        --field token --service-account checkout > payments-api.yaml

Plaintext never comes from the command line (any local user could read it in the process list):
only from standard input or files. Key material goes only to files created with mode 0600 or to
standard output when asked for a Secret manifest; messages show versions and fingerprints.

Exit codes: 0 success; 1 a backup that does not match (confirm-backup); 2 usage, key or
cluster error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import yaml

from tenantry.crypto import custody, errors, keyring, sealing
from tenantry.model import common
from tenantry.model import credential as credential_model
from tenantry.model import rotation as rotation_model

EXIT_OK, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2
KEYRING_SECRET = custody.KEYRING_SECRET
SEALING_KEY_SECRET = "tenantry-sealing-key"  # noqa: S105
# The key of the sealing key Secret, i.e. the file name where the Deployment mounts it.
SEALING_KEY_FILE = "sealing-key.pem"
REPO_ROOT = Path(__file__).resolve().parents[3]
SEALED_SAMPLE = REPO_ROOT / "manifests" / "samples" / "credential-sealed.yaml"


class UsageError(Exception):
    """Bad options or unusable input; printed as `error: ...` with exit code 2."""


Command = Callable[[argparse.Namespace], int]


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _guard(work: Command) -> Command:
    """Turn the expected failures of a command into a one-line error. Crypto errors never
    carry key bytes or plaintext; OS errors are reduced to file name and cause."""
    def run(args: argparse.Namespace) -> int:
        try:
            return work(args)
        except (UsageError, errors.CryptoError) as error:
            return _fail(str(error))
        except OSError as error:
            return _fail(f"{error.filename}: {error.strerror or type(error).__name__}"
                         if error.filename else f"{type(error).__name__}: {error.strerror}")
    return run


# -- files and manifests -------------------------------------------------------------------------

def write_private(path: Path, content: str | bytes, *, force: bool = False) -> None:
    """Write key material to `path` with mode 0600, atomically; refuse to overwrite unless
    `force` (losing a keyring loses every credential encrypted under it)."""
    data = content.encode() if isinstance(content, str) else content
    if path.exists() and not force:
        raise UsageError(f"{path} exists; pass --force to replace it (the keys it holds are "
                         "lost unless you keep a copy)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def secret_manifest(name: str, namespace: str, string_data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "tenantry",
                                "app.kubernetes.io/component": "operator"}},
        "stringData": string_data,
    }


def _dump(document: dict[str, Any], comment: str = "") -> str:
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    return header + yaml.safe_dump(document, sort_keys=False, width=1_000_000)


# -- keyring -------------------------------------------------------------------------------------

def _keyring_init(args: argparse.Namespace) -> int:
    ring = keyring.generate(args.version)
    if args.secret:
        print(_dump(secret_manifest(args.name, args.namespace, keyring.to_secret_data(ring)),
                    "The operator's master keyring: keep it as safe as the cluster's etcd "
                    "backups.\nLosing it loses every Credential; never commit it."), end="")
    if args.output:
        write_private(Path(args.output), keyring.dumps(ring), force=args.force)
        print(f"wrote keyring {args.output}: primary {ring.primary}", file=sys.stderr)
    return EXIT_OK


def _keyring_add_version(args: argparse.Namespace) -> int:
    path = Path(args.keyring)
    if path.is_dir():
        raise UsageError(f"{path} is a directory (a mounted Secret): edit the keyring file "
                         "form, then create the Secret from it with --secret")
    ring = keyring.add_version(keyring.load_file(path), args.version)
    added = ring.versions[-1] if args.version is None else args.version
    if args.promote:
        ring = keyring.promote(ring, added)
    write_private(path, keyring.dumps(ring), force=True)
    print(f"{path}: added {added}; primary {ring.primary}; versions "
          f"{', '.join(ring.versions)}", file=sys.stderr)
    if args.secret:
        print(_dump(secret_manifest(args.name, args.namespace, keyring.to_secret_data(ring))),
              end="")
    return EXIT_OK


def _keyring_show(args: argparse.Namespace) -> int:
    ring = keyring.load(args.keyring)
    print(f"primary: {ring.primary}")
    print(f"versions: {', '.join(ring.versions)}")
    return EXIT_OK


def _policy_ref(text: str) -> tuple[str, str]:
    namespace, _, name = text.partition("/")
    if not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(
            f"{text!r}: name the RotationPolicy as NAMESPACE/NAME, e.g. tenantry-system/master")
    return namespace, name


def _keyring_confirm_backup(args: argparse.Namespace) -> int:
    """Check a backup against the check values a MasterKey policy shows, then confirm it."""
    from kubernetes import client

    from tenantry import kube

    namespace, name = args.policy
    where = f"RotationPolicy {namespace}/{name}"
    backup = keyring.load_backup(args.backup)
    api = kube.api_client(args.kubeconfig)
    try:
        custom = client.CustomObjectsApi(api)
        try:
            policy = cast(dict[str, Any], custom.get_namespaced_custom_object(
                common.GROUP, common.VERSION, namespace, rotation_model.PLURAL, name))
        except client.ApiException as error:
            raise UsageError(f"cannot read {where}: {error.status} {error.reason}") from None
        master = (policy.get("status") or {}).get("masterKey") or {}
        pending = master.get("rotation") or {}
        version, value = pending.get("newVersion"), pending.get("checkValue")
        if pending.get("step") != rotation_model.KeyStep.AWAITING_BACKUP or not version \
                or not value:
            raise UsageError(f"{where} waits for no backup (no new key version is pending): "
                             "nothing to confirm")
        expected = {str(k): str(v) for k, v in (master.get("checkValues") or {}).items()}
        expected[str(version)] = str(value)
        if problems := keyring.backup_problems(backup, expected):
            print(f"error: {args.backup} is not a backup of the keyring {where} rotates: "
                  f"{'; '.join(problems)}. Take the backup again (the command is in its "
                  "AwaitingBackup condition)", file=sys.stderr)
            return EXIT_MISMATCH
        confirmation = f"{version}:{value}"
        try:
            custom.patch_namespaced_custom_object(
                common.GROUP, common.VERSION, namespace, rotation_model.PLURAL, name,
                {"metadata": {"annotations": {rotation_model.BACKUP_ANNOTATION: confirmation}}})
        except client.ApiException as error:
            raise UsageError(f"cannot annotate {where}: {error.status} {error.reason}") from None
    finally:
        api.close()
    print(f"{where}: backup of key version {version} (check value {value}) confirmed, with "
          f"versions {', '.join(backup.versions)}; the operator promotes it next")
    return EXIT_OK


# -- sealing key ---------------------------------------------------------------------------------

def _sealing_key_init(args: argparse.Namespace) -> int:
    key = sealing.generate_private_key()
    pem = sealing.private_key_to_pem(key).decode("ascii")
    if args.secret:
        print(_dump(secret_manifest(args.name, args.namespace, {SEALING_KEY_FILE: pem}),
                    "The operator's sealing private key: whoever holds it opens every sealed "
                    "Credential.\nNever commit it."), end="")
    if args.output:
        write_private(Path(args.output), pem, force=args.force)
    print(f"sealing key {sealing.fingerprint(key)}"
          f"{' written to ' + args.output if args.output else ''}", file=sys.stderr)
    return EXIT_OK


def _sealing_key_public(args: argparse.Namespace) -> int:
    keys = custody.load_sealing_keys(Path(args.sealing_key))
    print(sealing.public_key_to_pem(keys.primary.public_key()).decode("ascii"), end="")
    print(keys.fingerprint, file=sys.stderr)
    return EXIT_OK


# -- seal ----------------------------------------------------------------------------------------

def fetch_public_key(kubeconfig: str | None, namespace: str) -> Any:
    """The operator's published sealing public key, read with the caller's kubeconfig."""
    from kubernetes import client

    from tenantry import kube

    api = kube.api_client(kubeconfig)
    try:
        configmap = client.CoreV1Api(api).read_namespaced_config_map(
            custody.PUBLIC_KEY_CONFIGMAP, namespace)
        document = cast(dict[str, Any], api.sanitize_for_serialization(configmap))
    except client.ApiException as error:
        raise UsageError(
            f"cannot read ConfigMap {namespace}/{custody.PUBLIC_KEY_CONFIGMAP} "
            f"({error.status} {error.reason}): is the operator running with --sealing-key, "
            "and may you read it? Or pass --public-key FILE") from None
    finally:
        api.close()
    return custody.public_key_from_configmap(document)


def _values(args: argparse.Namespace) -> dict[str, bytes]:
    """Field -> plaintext, from --from-file [FIELD=]PATH or (with --field) standard input."""
    values: dict[str, bytes] = {}
    sources: list[str] = args.from_file or []
    if args.field and len(sources) > 1:
        raise UsageError("--field names one value: give at most one --from-file with it")
    if args.field and not sources:
        if sys.stdin.isatty():
            print(f"value of {args.field!r} (then Ctrl-D):", file=sys.stderr)
        data = sys.stdin.buffer.read()
        if not args.keep_newline and data.endswith(b"\n"):
            data = data[:-1]
        return {args.field: data}
    if not sources:
        raise UsageError("nothing to seal: give --field NAME (value on standard input) or "
                         "--from-file [FIELD=]PATH")
    for source in sources:
        field, _, path = source.rpartition("=") if "=" in source else ("", "", source)
        field = args.field or field or Path(path).name
        if field in values:
            raise UsageError(f"field {field!r} given twice")
        values[field] = Path(path).read_bytes()
    return values


def seal_values(public_key: Any, namespace: str, name: str,
                values: dict[str, bytes]) -> dict[str, str]:
    return {field: sealing.seal(public_key, sealing.Target(namespace, name, field), value)
            for field, value in sorted(values.items())}


def credential_manifest(namespace: str, name: str, encrypted: dict[str, str], *,
                        scope: str, service_accounts: Sequence[str],
                        description: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if description:
        spec["description"] = description
    spec["scope"] = scope
    if service_accounts:
        spec["allowedServiceAccounts"] = list(service_accounts)
    spec["sealed"] = {"encryptedData": encrypted}
    return {"apiVersion": common.API_VERSION, "kind": credential_model.KIND,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _seal(args: argparse.Namespace) -> int:
    if args.scope == credential_model.Scope.CALLER and not args.service_account \
            and args.output == "credential":
        raise UsageError("scope caller needs at least one --service-account (the "
                         "ServiceAccounts of the namespace that may use the credential)")
    if bool(args.public_key) == bool(args.fetch_key):
        raise UsageError("give the operator's public key: --public-key FILE or --fetch-key")
    values = _values(args)
    if args.output == "value" and len(values) != 1:
        raise UsageError("--output value prints one value: seal one field")
    if args.public_key:
        public_key = sealing.load_public_key(Path(args.public_key).read_bytes())
        origin = args.public_key
    else:
        public_key = fetch_public_key(args.kubeconfig, args.operator_namespace)
        origin = f"ConfigMap {args.operator_namespace}/{custody.PUBLIC_KEY_CONFIGMAP}"
    fingerprint = sealing.fingerprint(public_key)
    if args.fingerprint and args.fingerprint != fingerprint:
        raise UsageError(f"the key from {origin} is {fingerprint}, not the expected "
                         f"{args.fingerprint}: refusing to seal")
    encrypted = seal_values(public_key, args.namespace, args.name, values)
    print(f"sealed {', '.join(encrypted)} for {args.namespace}/{args.name} with key "
          f"{fingerprint} ({origin})", file=sys.stderr)
    if args.output == "value":
        print(next(iter(encrypted.values())))
        return EXIT_OK
    manifest = credential_manifest(args.namespace, args.name, encrypted, scope=args.scope,
                                   service_accounts=args.service_account,
                                   description=args.description)
    print(_dump(manifest, f"Sealed with `tenantry seal` for key {fingerprint}: safe to commit.\n"
                          f"Opens only as Credential {args.namespace}/{args.name}."), end="")
    return EXIT_OK


# -- the operator's options ------------------------------------------------------------------------

def add_key_options(parser: argparse.ArgumentParser) -> None:
    """`--keyring` and `--sealing-key` for `tenantry operator run`."""
    parser.add_argument("--keyring", metavar="PATH",
                        default=os.environ.get(custody.ENV_KEYRING),
                        help="master keyring: a file, or the directory a keyring Secret is "
                             f"mounted in (default: ${custody.ENV_KEYRING}); without one, "
                             "Credentials report KeyringUnavailable")
    parser.add_argument("--sealing-key", metavar="FILE",
                        default=os.environ.get(custody.ENV_SEALING_KEY),
                        help="PEM file of the X25519 sealing key(s) (default: "
                             f"${custody.ENV_SEALING_KEY}); published for `tenantry seal`")


def key_options(args: argparse.Namespace) -> custody.KeyOptions:
    return custody.KeyOptions(
        keyring=Path(args.keyring) if getattr(args, "keyring", None) else None,
        sealing_key=Path(args.sealing_key) if getattr(args, "sealing_key", None) else None)


def register(subparsers: Any) -> None:
    """Add `keyring`, `sealing-key` and `seal` to the `tenantry` command's subparsers."""
    namespace = custody.operator_namespace()

    def secret_options(parser: argparse.ArgumentParser, name: str) -> None:
        parser.add_argument("--output", "-o", metavar="FILE",
                            help="write the key to FILE (mode 0600)")
        parser.add_argument("--secret", action="store_true",
                            help="print a Secret manifest for the operator to standard output")
        parser.add_argument("--name", default=name, help="Secret name (default: %(default)s)")
        parser.add_argument("--namespace", default=namespace,
                            help="Secret namespace (default: $TENANTRY_NAMESPACE or "
                                 "%(default)s)")
        parser.add_argument("--force", action="store_true", help="replace an existing FILE")

    ring = subparsers.add_parser(
        "keyring", help="the operator's master keyring: create, add versions, show",
        description="Master key versions (32 random bytes each) Credentials are encrypted "
                    "under, per tenant through HKDF-SHA256. Keep it secret and backed up.")
    ring_commands = ring.add_subparsers(dest="keyring_command", metavar="KEYRING_COMMAND",
                                        required=True)
    init = ring_commands.add_parser("init", help="create a new keyring (file or Secret)")
    secret_options(init, KEYRING_SECRET)
    init.add_argument("--version", default="v1", help="first version (default: %(default)s)")
    init.set_defaults(func=_guard(_require_target(_keyring_init)))
    add = ring_commands.add_parser(
        "add-version", help="add a master key version to a keyring file",
        description="Add a random version; it decrypts at once but encrypts only once "
                    "promoted. Roll the new keyring out to every replica before promoting.")
    add.add_argument("--keyring", required=True, metavar="FILE", help="keyring file to update")
    add.add_argument("--version", help="name of the new version (default: the next vN)")
    add.add_argument("--promote", action="store_true", help="make it primary right away")
    add.add_argument("--secret", action="store_true",
                     help="also print the updated keyring as a Secret manifest")
    add.add_argument("--name", default=KEYRING_SECRET, help="Secret name (default: %(default)s)")
    add.add_argument("--namespace", default=namespace, help="Secret namespace")
    add.set_defaults(func=_guard(_keyring_add_version))
    show = ring_commands.add_parser("show", help="print versions and the primary (no keys)")
    show.add_argument("--keyring", required=True, metavar="PATH",
                      help="keyring file or mounted Secret directory")
    show.set_defaults(func=_guard(_keyring_show))
    confirm = ring_commands.add_parser(
        "confirm-backup", help="confirm a MasterKey rotation's new version is backed up",
        description="Check that BACKUP (a Secret manifest from `kubectl get secret "
                    f"{KEYRING_SECRET} -o yaml`, a keyring file or directory) holds every key "
                    "version the RotationPolicy shows, with the same check values, then set "
                    f"its {rotation_model.BACKUP_ANNOTATION} annotation: the operator promotes "
                    "the new version only after that. Exit 1 if the backup does not match.")
    confirm.add_argument("policy", type=_policy_ref, metavar="NAMESPACE/NAME",
                         help="the MasterKey RotationPolicy")
    confirm.add_argument("--backup", required=True, metavar="FILE",
                         help="the backup to check (kept offline afterwards)")
    confirm.add_argument("--kubeconfig", help="default: $KUBECONFIG, then in-cluster")
    confirm.set_defaults(func=_guard(_keyring_confirm_backup))

    key = subparsers.add_parser(
        "sealing-key", help="the operator's sealing key pair (X25519)",
        description="The operator opens sealed Credentials with the private key and publishes "
                    f"the public key in ConfigMap {custody.PUBLIC_KEY_CONFIGMAP}.")
    key_commands = key.add_subparsers(dest="sealing_key_command", metavar="SEALING_COMMAND",
                                      required=True)
    key_init = key_commands.add_parser("init", help="create a new sealing key (file or Secret)")
    secret_options(key_init, SEALING_KEY_SECRET)
    key_init.set_defaults(func=_guard(_require_target(_sealing_key_init)))
    public = key_commands.add_parser("public", help="print the public key (PEM) of a key file")
    public.add_argument("--sealing-key", required=True, metavar="FILE")
    public.set_defaults(func=_guard(_sealing_key_public))

    seal = subparsers.add_parser(
        "seal", help="encrypt values offline for a Credential (safe to commit)",
        description="Encrypt values to the operator's public key for one Credential "
                    "(namespace and name) and field: they open nowhere else. Values come from "
                    "standard input (--field; one trailing newline dropped unless "
                    "--keep-newline) or files (--from-file [FIELD=]PATH), never from the "
                    "command line. Prints a Credential to apply, or just the sealed value.")
    seal.add_argument("--namespace", "-n", required=True, help="the Credential's namespace")
    seal.add_argument("--name", required=True, help="the Credential's name")
    seal.add_argument("--field", help="field name; its value is read from standard input")
    seal.add_argument("--from-file", action="append", metavar="[FIELD=]PATH",
                      help="read a field's value from a file (repeatable; FIELD defaults to "
                           "the file name)")
    seal.add_argument("--keep-newline", action="store_true",
                      help="keep a trailing newline read from standard input")
    seal.add_argument("--public-key", metavar="FILE",
                      help="the operator's public key (PEM, or base64 of the raw key)")
    seal.add_argument("--fetch-key", action="store_true",
                      help=f"read the public key from ConfigMap {custody.PUBLIC_KEY_CONFIGMAP} "
                           "through your kubeconfig")
    seal.add_argument("--kubeconfig", help="for --fetch-key (default: $KUBECONFIG)")
    seal.add_argument("--operator-namespace", default=namespace,
                      help="the operator's namespace, for --fetch-key (default: %(default)s)")
    seal.add_argument("--fingerprint", metavar="sha256:HEX",
                      help="refuse to seal unless the key has this fingerprint")
    seal.add_argument("--output", choices=("credential", "value"), default="credential",
                      help="print a Credential manifest (default) or only the sealed value")
    seal.add_argument("--scope", default=credential_model.Scope.CALLER.value,
                      choices=[scope.value for scope in credential_model.Scope],
                      help="the Credential's spec.scope (default: %(default)s)")
    seal.add_argument("--service-account", action="append", default=[], metavar="NAME",
                      help="a ServiceAccount of the namespace that may use it (repeatable)")
    seal.add_argument("--description", help="the Credential's spec.description")
    seal.set_defaults(func=_guard(_seal))


def _require_target(work: Command) -> Command:
    def run(args: argparse.Namespace) -> int:
        if not args.output and not args.secret:
            raise UsageError("say where the key goes: --output FILE and/or --secret")
        return work(args)
    return run


# -- `tenantry dev up` -----------------------------------------------------------------------------

def dev_key_files(state_dir: Path) -> list[str]:
    """A fresh keyring and sealing key in `state_dir` (mode 0600), and the `tenantry operator
    run` options naming them: for development environments and tests."""
    ring_path, key_path = state_dir / "keyring.json", state_dir / SEALING_KEY_FILE
    write_private(ring_path, keyring.dumps(keyring.generate()), force=True)
    write_private(key_path, sealing.private_key_to_pem(sealing.generate_private_key()),
                  force=True)
    return ["--keyring", str(ring_path), "--sealing-key", str(key_path)]


def dev_operator_keys(kubeconfig: Path, state_dir: Path) -> list[str]:
    """For `tenantry dev up`: `dev_key_files`, plus the operator's namespace (where it
    publishes its public key)."""
    from tenantry import kube

    options = dev_key_files(state_dir)
    api = kube.api_client(kubeconfig)
    try:
        kube.apply(api, [{"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": custody.operator_namespace(),
                                       "labels": {"app.kubernetes.io/name": "tenantry"}}}])
    finally:
        api.close()
    return options


def _sealing_key_option(options: Sequence[str]) -> Path:
    return Path(options[list(options).index("--sealing-key") + 1])


def seal_dev_sample(kubeconfig: Path, options: Sequence[str], sample: Path = SEALED_SAMPLE,
                    timeout: float = 30.0) -> str:
    """For `tenantry dev up`: apply the sealed sample Credential, its values sealed afresh with
    this cluster's key (random demo values, never shown), and wait for it to be Ready."""
    from kubernetes import client

    from tenantry import kube

    if not sample.exists() or "--sealing-key" not in options:
        return "no sealed sample Credential applied"
    public_key = custody.load_sealing_keys(_sealing_key_option(options)).primary.public_key()
    documents = [d for d in kube.load_manifests([sample]) if d.get("kind") == "Credential"]
    for document in documents:
        meta, sealed = document["metadata"], document["spec"]["sealed"]["encryptedData"]
        sealed.update(seal_values(public_key, meta["namespace"], meta["name"], {
            field: secrets.token_urlsafe(24).encode() for field in sealed}))
    api = kube.api_client(kubeconfig)
    custom = client.CustomObjectsApi(api)
    try:
        try:
            kube.apply(api, documents)
        except client.ApiException as error:
            return f"sealed sample Credential not applied: {error.status} {error.reason}"
        deadline = time.monotonic() + timeout
        for document in documents:
            meta = document["metadata"]
            where = f"{meta['namespace']}/{meta['name']}"
            ready: dict[str, Any] = {}
            while time.monotonic() < deadline:
                obj = cast(dict[str, Any], custom.get_namespaced_custom_object(
                    common.GROUP, common.VERSION, meta["namespace"], credential_model.PLURAL,
                    meta["name"]))
                ready = next((c for c in (obj.get("status") or {}).get("conditions") or []
                              if c["type"] == "Ready"), {})
                if ready.get("status") == "True":
                    break
                time.sleep(0.5)
            if ready.get("status") != "True":
                return (f"sample Credential {where} not Ready: {ready.get('reason', 'pending')} "
                        f"{ready.get('message', '')}".strip())
    finally:
        api.close()
    return ("sample Credential(s) sealed with this cluster's key and Ready: "
            + ", ".join(f"{d['metadata']['namespace']}/{d['metadata']['name']}"
                        for d in documents))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the commands standalone (the `tenantry` command wires `register` instead)."""
    parser = argparse.ArgumentParser(prog="tenantry")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
