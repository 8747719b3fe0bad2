"""Helpers for the webhook's e2e tests: the webhook process, a raw API client that sees warnings,
and objects to submit.

The raw client speaks HTTP to the apiserver itself (client certificate, keep-alive), because the
generated client hides response headers, and admission warnings arrive as `Warning` headers.
"""

from __future__ import annotations

import copy
import dataclasses
import http.client
import json
import re
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tenantry.devcluster.cluster import WEBHOOK_CLIENT_CN, LocalControlPlane
from tenantry.devcluster.process import free_port, wait_until
from tests import logscan
from tests.conftest import REPO_ROOT

WORKLOADS = "workloads.admission.tenantry.dev"
CREDENTIALS = "credentials.admission.tenantry.dev"
DENIED_BY_WORKLOADS = f'admission webhook "{WORKLOADS}" denied the request'
DENIED_BY_CREDENTIALS = f'admission webhook "{CREDENTIALS}" denied the request'
WEBHOOK_USER = "system:serviceaccount:tenantry-system:tenantry-webhook"
WEBHOOK_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:tenantry-system",
                  "system:authenticated")

# kind -> (API prefix, plural)
PATHS = {
    "Pod": ("/api/v1", "pods"),
    "Service": ("/api/v1", "services"),
    "PodTemplate": ("/api/v1", "podtemplates"),
    "ReplicationController": ("/api/v1", "replicationcontrollers"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "DaemonSet": ("/apis/apps/v1", "daemonsets"),
    "ReplicaSet": ("/apis/apps/v1", "replicasets"),
    "Job": ("/apis/batch/v1", "jobs"),
    "CronJob": ("/apis/batch/v1", "cronjobs"),
    "Credential": ("/apis/tenantry.dev/v1alpha1", "credentials"),
}

# Each violation in a refusal ends with " [ruleId]", then "; " or the end of the message.
_RULE_END = re.compile(r" \[(\w+)\](?:; |$)")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the apiserver answered."""

    status: int
    body: dict[str, Any]
    warnings: tuple[str, ...]

    @property
    def allowed(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))

    def findings(self) -> set[tuple[str, str]]:
        """(field path, rule id) of each violation the refusal lists."""
        text = self.message.split("violates Tenantry's hardening rules: ", 1)[-1]
        found, start = set(), 0
        for match in _RULE_END.finditer(text):
            found.add((text[start:match.start()].split(": ", 1)[0], match.group(1)))
            start = match.end()
        return found

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message or self.body.get('kind')} {self.warnings}"


def _warning_text(header: str) -> str:
    """`299 - "text"` -> text."""
    match = re.match(r'^\d{3} \S+ "(.*)"', header)
    return match.group(1).replace('\\"', '"') if match else header


class RawApi:
    """Minimal HTTPS client of the apiserver as the cluster admin (keep-alive, sees warnings)."""

    def __init__(self, control_plane: LocalControlPlane) -> None:
        workdir = control_plane.workdir
        self._context = ssl.create_default_context(cafile=str(workdir / "ca.crt"))
        self._context.load_cert_chain(str(workdir / "admin.crt"), str(workdir / "admin.key"))
        self._port = control_plane.port
        self._connection: http.client.HTTPSConnection | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> Outcome:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in range(2):
            if self._connection is None:
                self._connection = http.client.HTTPSConnection(
                    "127.0.0.1", self._port, context=self._context, timeout=30)
            try:
                self._connection.request(method, path, body=data, headers=headers)
                response = self._connection.getresponse()
                raw = response.read()
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise
                continue
            warnings = tuple(_warning_text(w) for w in response.headers.get_all("Warning") or [])
            try:
                parsed = json.loads(raw) if raw else {}
            except ValueError:
                parsed = {"message": raw.decode(errors="replace")}
            return Outcome(response.status, parsed, warnings)
        raise AssertionError("unreachable")

    def create(self, obj: dict[str, Any], *, dry_run: bool = True) -> Outcome:
        prefix, plural = PATHS[obj["kind"]]
        namespace = obj["metadata"]["namespace"]
        query = "?dryRun=All" if dry_run else ""
        return self.request("POST", f"{prefix}/namespaces/{namespace}/{plural}{query}", obj)


# -- objects -------------------------------------------------------------------------------------

def in_namespace(pod: dict[str, Any], namespace: str, name: str | None = None) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod.setdefault("metadata", {})
    pod["metadata"]["namespace"] = namespace
    if name:
        pod["metadata"]["name"] = name
    return pod


def deployment(pod: dict[str, Any], namespace: str, name: str) -> dict[str, Any]:
    """`pod` as a Deployment's template (with the labels and selector the API requires)."""
    labels = {"app": name}
    template = {"metadata": {**copy.deepcopy(pod.get("metadata", {})), "labels": labels},
                "spec": copy.deepcopy(pod["spec"])}
    template["metadata"].pop("name", None)
    template["metadata"].pop("namespace", None)
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template}}


def cronjob(pod: dict[str, Any], namespace: str, name: str) -> dict[str, Any]:
    """`pod` as a CronJob's job template (restartPolicy Never, which Jobs require)."""
    template = {"metadata": copy.deepcopy(pod.get("metadata", {})),
                "spec": {**copy.deepcopy(pod["spec"]), "restartPolicy": "Never"}}
    template["metadata"].pop("name", None)
    template["metadata"].pop("namespace", None)
    return {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}}}


def credential(namespace: str, name: str = "probe", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "tenantry.dev/v1alpha1", "kind": "Credential",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"scope": "platform", "fromSecret": {"name": "plain"}, **spec}}


def dns_name(text: str) -> str:
    """A fixture file name as an object name (lowercase, dashes)."""
    return re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")[:50]


# -- the webhook process -------------------------------------------------------------------------

class WebhookProcess:
    """`tenantry webhook run` as a child process, called by the apiserver at a URL, and only by
    it: the apiserver of `control_plane` authenticates with its webhook client certificate."""

    def __init__(self, kubeconfig: Path, workdir: Path, *, control_plane: LocalControlPlane,
                 extra_args: Sequence[str] = ()) -> None:
        self.kubeconfig = kubeconfig
        self.client_ca = control_plane.webhook_client_ca
        self.apiserver_cert = (control_plane.webhook_client_cert,
                               control_plane.webhook_client_key)
        self.workdir = workdir
        self.port = free_port()
        self.cert_dir = workdir / "certs"
        self.log_path = workdir / "webhook.log"
        logscan.watch_log("webhook", self.log_path)
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tenantry", "webhook", "run",
                 "--kubeconfig", str(self.kubeconfig),
                 "--listen", f"127.0.0.1:{self.port}", "--url", self.url,
                 "--cert-dir", str(self.cert_dir), "--client-ca-file", str(self.client_ca),
                 "--client-cn", WEBHOOK_CLIENT_CN, *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        finally:
            log.close()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt"))

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if not self.running():
                raise AssertionError(f"webhook exited:\n{self.log()[-3000:]}")
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2,  # noqa: S310
                                        context=self.ssl_context()) as response:
                return bool(response.status == 200)

        try:
            wait_until(ready, timeout=timeout, what="the webhook's /readyz")
        except TimeoutError as error:
            raise AssertionError(f"{error}\n{self.log()[-3000:]}") from None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def post(self, path: str, body: bytes, content_type: str | None = "application/json", *,
             client_cert: tuple[Path, Path] | None = None,
             anonymous: bool = False) -> tuple[int, Any]:
        """POST straight to the webhook; (status, parsed body). By default as the apiserver
        does, with its client certificate; `client_cert` (cert, key) presents another one,
        `anonymous` none."""
        context = self.ssl_context()
        if not anonymous:
            cert, key = client_cert or self.apiserver_cert
            context.load_cert_chain(str(cert), str(key))
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=context,
                                                 timeout=10)
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode(errors="replace")
