"""The API's signing keys as they rotate, and the Lease that tells the operator which ones this
replica holds.

A signing key may sign only once every replica can verify its tokens (a client's next request
may land on any replica), so an ApiSigningKeys rotation needs to know what each replica has
loaded. Like kube-apiserver's identity Leases (`apiserver-<id>` in kube-system), every API
replica keeps a Lease of its own in Tenantry's namespace, `tenantry-api-<replica>` labelled
`tenantry.dev/api-identity`, renewed every `RENEW_SECONDS` and at once when its keys change,
with two annotations: the kids it verifies with (`tenantry.dev/verification-kids`, every key it
publishes in JWKS) and the kid it signs with (`tenantry.dev/signing-kid`). The operator asks for
a new key to sign only when every fresh Lease lists it (and the API, which writes the keyring,
checks that again), and starts the old key's overlap once every fresh Lease signs with the new
one. A Lease past its duration is a replica gone (or cut off):
it counts for nothing; one not renewed for an hour is deleted by the others (`collect`), and a
replica that stops cleanly deletes its own. Kids are public (RFC 7638 thumbprints), never keys.

`KeyWatch` re-reads the mounted keyring (`--signing-keyring DIR`, Secret
`tenantry-api-signing-keys`) every `CHECK_SECONDS` through `crypto.reloading` and swaps the
app's key set in one assignment on the event loop: a token is signed and its `kid` taken from
the same set, and a request sees either the old set or the new one. A keyring that fails to
load keeps the last good set (and logs why) rather than refusing every token. A replica started
with `--signing-key-file` instead has nothing that rotates, keeps no Lease and takes no part.

A replica that follows the keyring also runs `signingwriter.KeyringWriter` every
`signingwriter.WRITE_SECONDS`: the API, not the operator, writes Secret
`tenantry-api-signing-keys` (what the operator asks for through ConfigMap
`tenantry-api-signing-state`) and publishes its public facts there; the operator never reads a
signing key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import os
import re
import secrets
import socket
from pathlib import Path
from typing import Any

from tenantry.api import signingstate, signingwriter
from tenantry.api.tokens import rfc7517
from tenantry.crypto import errors, reloading
from tenantry.kubeapi import ApiError
from tenantry.model import common

log = logging.getLogger("tenantry.api.signing")

CHECK_SECONDS = 1.0
RENEW_SECONDS = 10.0
LEASE_DURATION_SECONDS = 30
COLLECT_SECONDS = 600.0
GONE_AFTER = datetime.timedelta(hours=1)
"""An identity Lease not renewed for this long (a replica killed without cleaning up) is
deleted by any replica, as kube-apiserver's identity Leases are collected."""
LEASE_PREFIX = "tenantry-api-"
IDENTITY_LABEL = signingstate.IDENTITY_LABEL
VERIFICATION_KIDS = signingstate.VERIFICATION_KIDS
SIGNING_KID = signingstate.SIGNING_KID
LEASE_API = signingstate.LEASE_API


class SigningKeyringError(errors.CryptoError):
    """The mounted signing keyring cannot be used (the message names the member and rule)."""


def _load(path: Path) -> rfc7517.SigningKeyring:
    try:
        return rfc7517.load_signing_keyring(path)
    except rfc7517.KeyFileError as error:
        raise SigningKeyringError(str(error)) from None


def load(path: Path) -> rfc7517.SigningKeyring:
    """The keyring in `path` now, for start-up: SigningKeyringError if it is not usable."""
    return _load(path)


def replica_id() -> str:
    """This replica's name: the pod's ($POD_NAME, else the host name), plus the process id
    outside a pod, so two processes on one host are two replicas."""
    pod = os.environ.get("POD_NAME")
    name = pod or f"{socket.gethostname()}-{os.getpid()}"
    return lease_name(name).removeprefix(LEASE_PREFIX)


def lease_name(replica: str) -> str:
    """A DNS-1123 subdomain name for `replica`'s Lease."""
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", replica.lower()).strip("-.") or secrets.token_hex(4)
    return (LEASE_PREFIX + cleaned)[:253].rstrip("-.")


@dataclasses.dataclass(frozen=True)
class Loaded:
    """What this replica holds now: the kids it verifies with and the one it signs with."""

    verification: tuple[str, ...]
    signing: str


def loaded(keys: rfc7517.KeySet) -> Loaded:
    return Loaded(verification=tuple(sorted(keys.verification_keys())), signing=keys.kid)


def lease(namespace: str, replica: str, held: Loaded, now: datetime.datetime) -> dict[str, Any]:
    """This replica's identity Lease, renewed at `now`."""
    stamp = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"apiVersion": LEASE_API, "kind": "Lease",
            "metadata": {"name": lease_name(replica), "namespace": namespace,
                         "labels": {IDENTITY_LABEL: "true",
                                    "app.kubernetes.io/name": "tenantry",
                                    "app.kubernetes.io/component": "api"},
                         "annotations": {VERIFICATION_KIDS: ",".join(held.verification),
                                         SIGNING_KID: held.signing}},
            "spec": {"holderIdentity": replica, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                     "renewTime": stamp}}


class KeyWatch:
    """The app's key set, kept in step with the mounted signing keyring, and this replica's
    Lease (when the API has a Kubernetes client)."""

    def __init__(self, services: Any, directory: Path | None, *, kube_api: Any,
                 namespace: str, replica: str) -> None:
        self._services = services
        self._keyring = reloading.Reloading(directory, _load, SigningKeyringError,
                                            "no signing keyring configured") \
            if directory is not None else None
        # Only a replica that follows the keyring takes part in its rotation: one on a fixed
        # --signing-key-file keeps no Lease (nothing it holds ever changes).
        self._kube = kube_api if directory is not None else None
        self.writer = signingwriter.KeyringWriter(kube_api, namespace, replica) \
            if self._kube is not None else None
        self._namespace = namespace
        self.replica = replica
        self._reported: Loaded | None = None
        self._attempted = float("-inf")
        self._failing = False
        self._exists = False
        self._task: asyncio.Task[None] | None = None
        self._problem = ""

    def refresh(self) -> bool:
        """Swap in the mounted keyring if it changed; True when the key set changed."""
        if self._keyring is None:
            return False
        try:
            ring = self._keyring.get()
        except SigningKeyringError as error:
            if str(error) != self._problem:
                self._problem = str(error)
                log.error("signing keyring unusable, keeping the keys loaded before: %s", error)
            return False
        self._problem = ""
        current: rfc7517.KeySet = self._services.settings.keys
        if ring.kids[ring.signing] == current.kid and \
                set(ring.kids.values()) == set(current.verification_keys()):
            return False
        self._services.settings = dataclasses.replace(self._services.settings,
                                                      keys=ring.key_set())
        log.info("signing keyring reloaded: signing with %s (version %s), verifying %s",
                 ring.kids[ring.signing], ring.signing, ", ".join(ring.kids.values()))
        return True

    async def renew(self, loop_time: float) -> None:
        """Create or renew this replica's Lease (at once when what it holds changed)."""
        if self._kube is None:
            return
        held = loaded(self._services.settings.keys)
        at_once = held != self._reported and not self._failing
        if not at_once and loop_time - self._attempted < RENEW_SECONDS:
            return
        self._attempted = loop_time
        body = lease(self._namespace, self.replica, held, datetime.datetime.now(datetime.UTC))
        name = body["metadata"]["name"]
        renewal = {"metadata": {"annotations": body["metadata"]["annotations"]},
                   "spec": body["spec"]}
        try:
            if self._exists:
                try:
                    await self._kube.merge_patch(LEASE_API, "Lease", name, renewal,
                                                 namespace=self._namespace)
                except ApiError as error:
                    if error.status != 404:
                        raise
                    await self._kube.create(body)
            else:
                try:
                    await self._kube.create(body)
                except ApiError as error:
                    if error.status != 409:
                        raise
                    await self._kube.merge_patch(LEASE_API, "Lease", name, renewal,
                                                 namespace=self._namespace)
            self._exists = True
        except ApiError as error:
            # Once per streak: the operator then sees this replica's Lease go stale (and
            # promotes no new key it cannot confirm); retried every RENEW_SECONDS.
            (log.debug if self._failing else log.warning)(
                "renewing Lease %s/%s failed: %s %s", self._namespace, name, error.status,
                error.reason)
            self._failing = True
            return
        if self._failing:
            log.info("Lease %s/%s renewed again", self._namespace, name)
        self._reported, self._failing = held, False

    async def collect(self, now: datetime.datetime) -> list[str]:
        """Delete the identity Leases of replicas gone for `GONE_AFTER` (not this one's), each
        only at the version read; the names deleted."""
        if self._kube is None:
            return []
        deleted = []
        for found in await self._kube.list(LEASE_API, "Lease", self._namespace,
                                           label_selector=f"{IDENTITY_LABEL}=true"):
            meta, spec = found.get("metadata") or {}, found.get("spec") or {}
            name = str(meta.get("name"))
            renewed = common.parse_time(spec.get("renewTime"))
            if name == lease_name(self.replica) or not name.startswith(LEASE_PREFIX) or (
                    renewed is not None and renewed + GONE_AFTER > now):
                continue
            try:
                await self._kube.delete(LEASE_API, "Lease", name, self._namespace,
                                        preconditions={"resourceVersion": str(
                                            meta.get("resourceVersion"))})
            except ApiError as error:
                if error.status not in (404, 409):  # gone, or renewed meanwhile
                    raise
                continue
            deleted.append(name)
            log.info("deleted the identity Lease %s of a replica gone since %s", name,
                     spec.get("renewTime") or "ever")
        return deleted

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        collected = loop.time()
        written = float("-inf")
        while True:
            try:
                self.refresh()
                await self.renew(loop.time())
                if self.writer is not None and \
                        loop.time() - written >= signingwriter.WRITE_SECONDS:
                    written = loop.time()
                    await self.writer.step()
                if loop.time() - collected >= COLLECT_SECONDS:
                    collected = loop.time()
                    await self.collect(datetime.datetime.now(datetime.UTC))
            except Exception as error:  # tried again next round
                log.warning("signing keys: %s", type(error).__name__)
            await asyncio.sleep(CHECK_SECONDS)

    def start(self) -> None:
        self.refresh()
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop; delete this replica's Lease (a clean shutdown is not a replica that lags)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._kube is not None and self._exists:
            try:
                await self._kube.delete(LEASE_API, "Lease", lease_name(self.replica),
                                        self._namespace)
            except ApiError as error:
                log.warning("deleting Lease %s failed: %s", lease_name(self.replica),
                            error.status)
