"""Keeps the webhook's TLS in step: the Secret, the server's SSL context, the caBundle, and the
rotation ConfigMap.

The certificates live in one Secret (`tenantry-webhook-tls` in Tenantry's namespace), so every
replica serves from the same CA and any replica may rotate. Each resync:

1. read the Secret and the rotation ConfigMap (`tenantry-webhook-rotation`: the operator's
   request) and let `certs.plan` decide (first start, rotation, expiry, new names, a request);
   write the result with the Secret's resourceVersion as a precondition: when two replicas race,
   one write wins and the other re-reads and adopts it (no split-brain CAs);
2. publish the trusted bundle as the caBundle of the webhook configuration (server-side apply,
   and only when the configuration differs from what it should be, so drift is corrected too);
3. load the serving certificate into the live SSL context: new handshakes use it at once, no
   restart, and connections already open finish undisturbed;
4. publish the public facts (served request, certificates; never a key) in the rotation
   ConfigMap, creating it on first start: the operator judges its requests from them, and may
   not read the Secret. The webhook makes the ConfigMap rather than the operator because
   `create` cannot be limited by name in RBAC: the operator's identity would then create any
   ConfigMap of Tenantry's namespace (the webhook already may, as it creates its Secret).
   Last, so that what it says is already served, and a failure here holds back no step above.

Publishing before loading means that when a rotation also replaces the serving certificate, the
apiserver already trusts the new CA by the time we present a certificate signed by it.

The same context asks peers for a client certificate and verifies it against the client CA file
(`clientauth`), which each resync re-reads too.

Between resyncs, every `REQUEST_POLL` seconds, a GET of the rotation ConfigMap looks for a
rotation the operator asked for (`certs.pending_request`) and resyncs at once when there is one:
a policy's rotation should not wait for the next resync (a minute by default), and while a
requested CA propagates this keeps checking until the serving certificate may switch. Facts a
replica published from a state another replica has since replaced are consistent (an older
served id with its older certificates), so the operator only waits; the next poll sees the
request unserved there and resyncs, which publishes the current ones.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tenantry.kubeapi import ApiError, KubeApi
from tenantry.model import common
from tenantry.webhook import certs, clientauth, metrics

logger = logging.getLogger(__name__)

FIELD_MANAGER = "tenantry-webhook"
LABELS = {common.MANAGED_BY_LABEL: "tenantry", "app.kubernetes.io/component": "webhook"}
WRITE_ATTEMPTS = 5
# How often (seconds) to look for a requested rotation between resyncs: one GET of one Secret.
REQUEST_POLL = 5.0


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def contains(actual: Any, desired: Any) -> bool:
    """Whether `actual` has every field of `desired` with the same value (lists: same length,
    item by item); fields the apiserver added on its own are ignored."""
    if isinstance(desired, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and contains(actual[key], value) for key, value in desired.items())
    if isinstance(desired, list):
        return (isinstance(actual, list) and len(actual) == len(desired)
                and all(contains(a, d) for a, d in zip(actual, desired, strict=True)))
    return bool(actual == desired)


def _write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, readable by us only."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


class CertKeeper:
    """The webhook's certificates, from the Secret to the SSL context and the caBundle."""

    def __init__(self, api: KubeApi, *, namespace: str, secret_name: str,
                 names: tuple[str, ...], cert_dir: Path, policy: certs.CertPolicy,
                 configuration: Callable[[bytes], dict[str, Any]],
                 client_ca_file: Path | None = None,
                 clock: Callable[[], datetime.datetime] = utcnow,
                 rotation_name: str = certs.ROTATION_CONFIGMAP) -> None:
        self._api = api
        self._namespace = namespace
        self._secret_name = secret_name
        self._rotation_name = rotation_name
        self._names = names
        self._cert_dir = cert_dir
        self._policy = policy
        self._configuration = configuration
        self._clock = clock
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        # None: --insecure-no-client-auth; no client certificate is asked for.
        self.client_ca = (None if client_ca_file is None
                          else clientauth.ClientCa(self.context, client_ca_file))
        self.state: certs.TlsState | None = None
        self._loaded: bytes | None = None

    @property
    def cert_file(self) -> Path:
        return self._cert_dir / certs.TLS_CERT

    @property
    def ca_file(self) -> Path:
        """The trusted bundle, for local clients of the webhook (tests, `dev up`)."""
        return self._cert_dir / certs.TRUSTED_CAS

    async def refresh(self) -> certs.TlsState:
        """Read the Secret and the request, plan, and store the plan's state if it changed."""
        for _ in range(WRITE_ATTEMPTS):
            secret = await self._api.get("v1", "Secret", self._secret_name, self._namespace)
            current: certs.TlsState | None = None
            if secret is not None:
                current, problem = certs.from_secret(secret)
                if problem:
                    logger.warning("Secret %s/%s holds no usable certificates (%s): replacing "
                                   "them", self._namespace, self._secret_name, problem)
            if current is not None:
                current = certs.with_request(current, await self._rotation())
            plan = certs.plan(self._clock(), current, self._names, self._policy)
            if not plan.changed:
                self.state = plan.state
                return plan.state
            version = None if secret is None else secret["metadata"].get("resourceVersion")
            body = certs.to_secret(plan.state, name=self._secret_name, namespace=self._namespace,
                                   labels=LABELS, resource_version=version)
            try:
                if secret is None:
                    await self._api.create(body)
                else:
                    await self._api.apply(body, field_manager=FIELD_MANAGER)
            except ApiError as error:
                if error.status == 409:
                    logger.info("Secret %s/%s changed under us (another replica?): re-reading",
                                self._namespace, self._secret_name)
                    continue
                raise
            for reason in plan.reasons:
                logger.info("webhook TLS: %s", reason)
            self.state = plan.state
            return plan.state
        raise RuntimeError(f"Secret {self._namespace}/{self._secret_name} kept changing while "
                           f"we tried to update it ({WRITE_ATTEMPTS} attempts)")

    def install(self, state: certs.TlsState) -> bool:
        """Serve `state`'s certificate from now on; False if it already was."""
        if self._loaded == state.serving.cert_pem:
            return False
        self._cert_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_file = self._cert_dir / certs.TLS_KEY
        _write_private(key_file, state.serving.key_pem)
        _write_private(self.cert_file, state.serving.cert_pem)
        _write_private(self.ca_file, state.ca_bundle())
        self.context.load_cert_chain(self.cert_file, key_file)
        first = self._loaded is None
        self._loaded = state.serving.cert_pem
        metrics.CERTIFICATE_EXPIRY.set(state.serving.cert.not_valid_after_utc.timestamp())
        logger.info("serving certificate %s: %s", "loaded" if first else "reloaded",
                    certs.describe(state.serving.cert))
        return True

    async def publish(self, state: certs.TlsState) -> bool:
        """Make the webhook configuration what it should be, caBundle included; False if it
        already was."""
        desired = self._configuration(state.ca_bundle())
        name = desired["metadata"]["name"]
        actual = await self._api.get(desired["apiVersion"], desired["kind"], name)
        if actual is not None and contains(actual, desired):
            return False
        await self._api.apply(desired, field_manager=FIELD_MANAGER)
        logger.info("ValidatingWebhookConfiguration %s %s (%d trusted CA(s))", name,
                    "created" if actual is None else "updated",
                    len(certs.split_pems(state.ca_bundle())))
        return True

    async def _rotation(self) -> dict[str, Any] | None:
        return await self._api.get("v1", "ConfigMap", self._rotation_name, self._namespace)

    async def publish_facts(self, state: certs.TlsState) -> bool:
        """Make the rotation ConfigMap's facts those of `state` (creating it if missing); False
        if they already were. The operator's request keys are never written here."""
        desired = certs.rotation_configmap(state, name=self._rotation_name,
                                           namespace=self._namespace, labels=LABELS)
        actual = await self._rotation()
        facts = {key: value for key, value in ((actual or {}).get("data") or {}).items()
                 if key in certs.FACT_KEYS}
        if actual is not None and facts == desired["data"]:
            return False
        try:
            if actual is None:
                await self._api.create(desired, field_manager=FIELD_MANAGER)
            else:
                await self._api.apply(desired, field_manager=FIELD_MANAGER)
        except ApiError as error:
            if error.status == 409:  # another replica made it first: the next resync applies
                return False
            raise
        logger.info("ConfigMap %s/%s %s: served %s, serving certificate serial %s",
                    self._namespace, self._rotation_name,
                    "created" if actual is None else "updated", state.served or "nothing yet",
                    certs.serial_text(state.serving.cert))
        return True

    async def start(self) -> certs.TlsState:
        """Certificates ready to serve with (before the server listens); ValueError if the
        client CA file holds no CA."""
        if self.client_ca is not None:
            self.client_ca.load()
        state = await self.refresh()
        self.install(state)
        return state

    async def sync(self) -> None:
        """One resync: the client CA, then the Secret, the caBundle, the server's certificate,
        and last the rotation facts (a failure to publish them never holds back serving)."""
        if self.client_ca is not None:
            self.client_ca.reload()
        state = await self.refresh()
        await self.publish(state)
        self.install(state)
        await self.publish_facts(state)

    async def requested(self) -> certs.Request | None:
        """The rotation the ConfigMap asks for and does not say was served (one GET)."""
        return certs.pending_request(await self._rotation())

    async def run(self, interval: float, request_poll: float = REQUEST_POLL) -> None:
        """Resync every `interval` seconds for ever, and sooner when a rotation is requested;
        failures are logged and retried."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(min(interval, request_poll))
            try:
                if time.monotonic() - last >= interval or await self.requested() is not None:
                    last = time.monotonic()
                    await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning("webhook TLS resync failed (retrying in %.0fs): %s",
                               min(interval, request_poll), error)
