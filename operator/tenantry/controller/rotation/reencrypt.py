"""`tenantry reencrypt`: re-encrypt Credentials under the keyring's primary version, by hand.

    tenantry reencrypt --all --keyring keyring.json --dry-run     what would change, under what
    tenantry reencrypt -n acme-prod --keyring /etc/tenantry/keyring --ledger-dsn-file dsn
    tenantry reencrypt -l team=payments --online --to-version v3  ask the running operator

The seeds' re-encryption tool. Two ways to run it:

- **offline** (the default): the command does the work itself, with the keyring file (`--keyring`)
  and your kubeconfig, each Credential through the operator's own code path (the Credential
  controller's `reconcile_now`, the same one a rotation uses): the same ciphertext, status,
  Events and `credential.reencrypt` ledger entries (as you, not as the operator). It needs no
  running operator (say, while it is scaled down), and is safe next to one: every write is
  bound to a generation, so whichever write lands last is intact.
- **online** (`--online`): the running operator does it, with its own keys and identity. The
  command annotates each Credential that is not under `--to-version` yet (the annotation is how a
  person asks the operator to reconcile now) and waits until each is.

Either way it is idempotent: a Credential already under the primary version is counted as
current and never rewritten, so running it twice does nothing the second time. `--dry-run`
prints what would be re-encrypted, from which version to which, without writing anything.

Exit codes: 0 every selected Credential is under the primary version; 1 some could not be
re-encrypted (listed by name) or the wait timed out; 2 usage, key or cluster error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tenantry.controller.rotation import masterkey, plan
from tenantry.model import common
from tenantry.model import credential as credential_model

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
# Not under tenantry.dev/: kopf leaves annotations under its own storage prefix out of the
# changes it reacts to, and this one must make the operator reconcile at once.
REQUEST_ANNOTATION = "tenantry-reencrypt/requested-at"
DEFAULT_SPOOL = Path.home() / ".local" / "state" / "tenantry" / "reencrypt-spool"
POLL_INTERVAL = 1.0


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which Credentials: every one (`namespace` None), or one namespace's; with labels."""

    namespace: str | None
    match_labels: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class Report:
    """What a run found and did (pure, printable)."""

    to_version: str
    current: tuple[str, ...] = ()
    reencrypted: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()
    """(name, reason)."""
    planned: tuple[tuple[str, str], ...] = ()
    """Dry run: (name, from version) of those that would be re-encrypted."""

    def lines(self, *, dry_run: bool) -> list[str]:
        if dry_run:
            out = [f"would re-encrypt {name}: {version} -> {self.to_version}"
                   for name, version in self.planned]
            by_version = Counter(version for _, version in self.planned)
            out.append(f"dry run: {len(self.planned)} Credential(s) would be re-encrypted under "
                       f"key version {self.to_version} (now under: "
                       f"{', '.join(f'{v} {n}' for v, n in sorted(by_version.items())) or '-'}"
                       f"), {len(self.current)} already current; nothing written")
            return out
        out = [f"failed {name}: {reason}" for name, reason in self.failed]
        out.append(f"{len(self.reencrypted)} re-encrypted under key version {self.to_version}, "
                   f"{len(self.current)} already current, {len(self.failed)} failed")
        return out

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.failed else EXIT_OK


def selects(selection: Selection, obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    return plan.selects(selection.match_labels, meta.get("labels") or {}) and (
        selection.namespace is None or meta.get("namespace") == selection.namespace)


def name_of(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return masterkey.credential_key(str(meta.get("namespace")), str(meta.get("name")))


def version_of(obj: Mapping[str, Any]) -> str | None:
    return plan.key_version(((obj.get("status") or {}).get("secretRef") or {}).get("keyId"))


def triage(credentials: Sequence[Mapping[str, Any]], to_version: str
           ) -> tuple[list[Mapping[str, Any]], list[str]]:
    """(those to re-encrypt, names of those already current), in name order (pure). A
    Credential with no ciphertext yet is left to the operator: nothing to re-encrypt."""
    stale, current = [], []
    for obj in sorted(credentials, key=name_of):
        version = version_of(obj)
        if version == to_version:
            current.append(name_of(obj))
        elif version is not None:
            stale.append(obj)
    return stale, current


def parse_selector(text: str) -> dict[str, str]:
    """`a=b,c=d` (equality only, like spec.credentialSelector.matchLabels)."""
    labels = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key or "!" in key:
            raise argparse.ArgumentTypeError(
                f"--selector {text!r}: use key=value pairs separated by commas (equality only)")
        labels[key.strip()] = value.strip()
    return labels


# -- offline: the operator's own code path, run here ------------------------------------------

async def _offline(args: argparse.Namespace, selection: Selection) -> int:
    import kopf

    from tenantry.controller.credential import handlers as credential_handlers
    from tenantry.controller.rotation import handlers as rotation_handlers
    from tenantry.crypto import custody, errors
    from tenantry.kubeapi import KubeApi
    from tenantry.ledger import recorder as ledger_recorder
    from tenantry.ledger.spool import Spool

    keys = custody.KeySource(custody.KeyOptions(
        keyring=Path(args.keyring), sealing_key=Path(args.sealing_key)
        if args.sealing_key else None))
    try:
        primary = keys.keyring().primary
    except errors.KeyringError as error:
        return _fail(str(error))
    api = await KubeApi.from_kubeconfig(args.kubeconfig)
    recorder: ledger_recorder.Recorder | None = None
    try:
        found = [c for c in await _list(api, selection) if selects(selection, c)]
        stale, current = triage(found, primary)
        if args.dry_run:
            return _print(Report(primary, tuple(current), planned=tuple(
                (name_of(c), version_of(c) or "none") for c in stale)), dry_run=True)
        sealed = [name_of(c) for c in stale if (c.get("spec") or {}).get("sealed")]
        if sealed and not args.sealing_key:
            return _fail(f"Credential(s) {plan.listed(sealed)} are sealed: give --sealing-key "
                         "FILE too (the operator's), or their status would report "
                         "SealingKeyUnavailable")
        if not args.no_ledger:
            try:
                dsn = ledger_recorder.ledger_dsn(args.ledger_dsn_file, disabled=False)
            except ValueError as error:
                return _fail(str(error))
            assert dsn is not None
            # No background flusher: entries are spooled (fsync'd) as they happen and delivered
            # in one go at the end, by `close`, so nothing is cut off mid-delivery.
            recorder = ledger_recorder.Recorder(Spool(Path(args.ledger_spool)), dsn,
                                                await api.whoami(), component="reencrypt")
        memo = kopf.Memo()
        memo.api, memo.ledger = api, recorder
        memo.credentials = credential_handlers.CredentialState(keys=keys)
        done: list[str] = []
        failed: list[tuple[str, str]] = []
        for start in range(0, len(stale), plan.BATCH_SIZE):
            chunk = stale[start:start + plan.BATCH_SIZE]
            names = tuple(name_of(c) for c in chunk)
            results = await rotation_handlers.reencrypt_batch(
                memo, plan.Batch(names, names, primary), chunk, cluster_wide=True)
            for result in results:
                if result.gone:
                    continue
                if result.reason is None and result.key_version == primary:
                    done.append(result.name)
                else:
                    failed.append((result.name, f"{result.reason or 'NotReencrypted'}: "
                                                f"{result.message}"[:300]))
            print(f"progress: {start + len(chunk)}/{len(stale)}", file=sys.stderr)
        return _print(Report(primary, tuple(current), tuple(done), tuple(failed)),
                      dry_run=False)
    finally:
        if recorder is not None:
            await recorder.close()
            if left := recorder.spool.count():
                print(f"warning: {left} ledger entr(y/ies) not delivered yet; they stay in "
                      f"{args.ledger_spool} for the next run", file=sys.stderr)
        await api.close()


async def _list(api: Any, selection: Selection) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = await api.list(
        common.API_VERSION, credential_model.KIND, selection.namespace,
        all_namespaces=selection.namespace is None)
    return items


# -- online: ask the running operator ----------------------------------------------------------

async def _online(args: argparse.Namespace, selection: Selection) -> int:
    from tenantry.kubeapi import ApiError, KubeApi

    target = args.to_version
    api = await KubeApi.from_kubeconfig(args.kubeconfig)
    try:
        found = [c for c in await _list(api, selection) if selects(selection, c)]
        stale, current = triage(found, target)
        if args.dry_run:
            return _print(Report(target, tuple(current), planned=tuple(
                (name_of(c), version_of(c) or "none") for c in stale)), dry_run=True)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        asked = {}
        for obj in stale:
            meta = obj["metadata"]
            try:
                await api.merge_patch(common.API_VERSION, credential_model.KIND,
                                      str(meta["name"]),
                                      {"metadata": {"annotations": {REQUEST_ANNOTATION: stamp}}},
                                      namespace=str(meta["namespace"]))
                asked[name_of(obj)] = obj
            except ApiError as error:
                print(f"failed {name_of(obj)}: cannot annotate it: {error.status} "
                      f"{error.reason}", file=sys.stderr)
        deadline = time.monotonic() + args.timeout
        waiting = set(asked)
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(POLL_INTERVAL)
            now = {name_of(c): c for c in await _list(api, selection)}
            waiting = {n for n in waiting if n in now and version_of(now[n]) != target}
            print(f"progress: {len(asked) - len(waiting)}/{len(asked)}", file=sys.stderr)
        failed = tuple((n, f"still under {version_of(asked[n]) or 'none'} after "
                           f"{args.timeout:.0f}s (see its Ready condition)")
                       for n in sorted(waiting))
        failed += tuple((name_of(c), "could not be annotated") for c in stale
                        if name_of(c) not in asked)
        return _print(Report(target, tuple(current),
                             tuple(sorted(set(asked) - waiting)), failed), dry_run=False)
    finally:
        await api.close()


# -- the command -------------------------------------------------------------------------------

def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _print(report: Report, *, dry_run: bool) -> int:
    for line in report.lines(dry_run=dry_run):
        print(line)
    return EXIT_OK if dry_run else report.exit_code


def _run(args: argparse.Namespace) -> int:
    if (args.all, args.namespace is not None, bool(args.selector)) == (False, False, False):
        return _fail("say which Credentials: --all, --namespace NS, --selector k=v (or both of "
                     "the last two)")
    if args.all and args.namespace is not None:
        return _fail("--all and --namespace exclude each other")
    if args.online and not args.to_version:
        return _fail("--online needs --to-version VERSION (the operator's primary version)")
    if not args.online and not args.keyring:
        return _fail("offline re-encryption needs --keyring PATH (file or mounted Secret "
                     "directory); or use --online --to-version to let the operator do it")
    selection = Selection(args.namespace, args.selector or {})
    try:
        return asyncio.run((_online if args.online else _offline)(args, selection))
    except Exception as error:  # API unreachable, refused: one line, no values
        from kubernetes_asyncio.config import ConfigException

        from tenantry.kubeapi import ApiError

        if isinstance(error, ApiError):
            return _fail(f"{error.status} {error.reason}: {error.message[:300]}")
        if isinstance(error, ConfigException | OSError):
            return _fail(f"{type(error).__name__}: {error}"[:300])
        raise


def register(subparsers: Any) -> None:
    """Add `reencrypt` to the `tenantry` command's subparsers."""
    command = subparsers.add_parser(
        "reencrypt", help="re-encrypt Credentials under the keyring's primary version",
        description="Re-encrypt Credentials (all, a namespace's, or those a label selector "
                    "picks) under the primary master key version: offline with --keyring "
                    "(through the operator's own code path), or --online through the running "
                    "operator. Idempotent; --dry-run says what would change.")
    which = command.add_argument_group("which Credentials")
    which.add_argument("--all", "-A", action="store_true", help="every namespace")
    which.add_argument("--namespace", "-n", help="one namespace")
    which.add_argument("--selector", "-l", type=parse_selector, metavar="K=V[,K=V]",
                       help="only Credentials with these labels")
    command.add_argument("--dry-run", action="store_true",
                         help="print what would be re-encrypted, and from which version")
    command.add_argument("--keyring", metavar="PATH",
                         help="offline: keyring file or mounted Secret directory")
    command.add_argument("--sealing-key", metavar="FILE",
                         help="offline: the sealing key, so sealed Credentials are also "
                              "checked against their spec (optional)")
    command.add_argument("--online", action="store_true",
                         help="let the running operator re-encrypt (no keys needed here)")
    command.add_argument("--to-version", metavar="VERSION",
                         help="online: the version to wait for (the operator's primary)")
    command.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                         help="online: how long to wait (default: %(default)s)")
    command.add_argument("--ledger-dsn-file", metavar="FILE",
                         help="offline: the audit ledger's DSN (default: $TENANTRY_LEDGER_DSN)")
    command.add_argument("--ledger-spool", default=str(DEFAULT_SPOOL), metavar="DIR",
                         help="offline: where undelivered ledger entries wait "
                              "(default: %(default)s)")
    command.add_argument("--no-ledger", action="store_true",
                         help="offline: record nothing in the audit ledger (explicit opt-out)")
    command.add_argument("--kubeconfig", help="default: $KUBECONFIG, then in-cluster")
    command.set_defaults(func=_run)
