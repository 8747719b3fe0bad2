"""`tenantry rotate NS/NAME`: rotate now, through the RotationPolicy's trigger, and follow it.

    tenantry rotate acme-prod/quarterly               set spec.trigger, print progress until done
    tenantry rotate acme-prod/quarterly --no-wait     set it and return
    tenantry rotate acme-prod/quarterly --trigger change-4711

The command only writes `spec.trigger` (to the current UTC time unless `--trigger` says), with
the caller's own kubeconfig, so RBAC decides who may rotate what and the audit ledger records
who asked. It then reads status: done once the operator has handled this trigger and no
rotation is in progress. `follow` is the pure part: what one status means for the command.

Exit codes: 0 rotated; 1 the rotation failed for some Credential, the policy is not valid, or
the timeout passed; 2 usage or cluster error.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import time
from collections.abc import Mapping
from typing import Any, cast

from tenantry.model import common
from tenantry.model import rotation as rotation_model

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
POLL_INTERVAL = 1.0


@dataclasses.dataclass(frozen=True)
class Followed:
    """What one look at the policy says."""

    line: str
    """Progress to print (printed only when it changes)."""
    exit_code: int | None = None
    """None: keep following."""


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in (obj.get("status") or {}).get("conditions") or []}


def follow(obj: Mapping[str, Any], trigger: str, generation: int) -> Followed:
    """Where the rotation asked for by `trigger` (set at `generation`) stands (pure)."""
    status = obj.get("status") or {}
    ready = _conditions(obj).get("Ready") or {}
    observed = status.get("observedGeneration")
    if not isinstance(observed, int) or observed < generation:
        return Followed("waiting for the operator to see the trigger")
    progress = status.get("progress") or {}
    counts = (f"{progress.get('reencrypted', 0)}/{progress.get('total', 0)} re-encrypted, "
              f"{progress.get('skipped', 0)} already current, {progress.get('failed', 0)} "
              "failed")
    if status.get("lastHandledTrigger") != trigger:
        if ready.get("status") == "False" and ready.get("reason") != "InProgress":
            return Followed(f"not rotating: {ready.get('reason')}: {ready.get('message')}",
                            EXIT_FAILED)
        return Followed("waiting for the rotation in progress to finish first")
    key_steps = (status.get("masterKey") or {}).get("rotation")
    if key_steps:
        # MasterKey: the key steps before the re-encryption; AwaitingBackup names the command.
        awaiting = _conditions(obj).get("AwaitingBackup") or {}
        if awaiting.get("status") == "True":
            return Followed(f"awaiting backup: {awaiting.get('message')}")
        rotating = _conditions(obj).get("Rotating") or {}
        return Followed(f"{key_steps.get('step')}: {rotating.get('message')}")
    if web_steps := (status.get("webhookCertificates") or {}).get("rotation"):
        rotating = _conditions(obj).get("Rotating") or {}
        return Followed(f"{web_steps.get('step')}: {rotating.get('message')}")
    if signing_steps := (status.get("signingKeys") or {}).get("rotation"):
        rotating = _conditions(obj).get("Rotating") or {}
        return Followed(f"{signing_steps.get('step')}: {rotating.get('message')}")
    if status.get("rotation"):
        return Followed(f"rotating: {counts}")
    if ready.get("status") == "True":
        # A rotation with no re-encryption (certificates, signing keys): what Ready says.
        return Followed(f"done: {counts if progress else ready.get('message')}", EXIT_OK)
    failures = ", ".join(f"{f.get('name')} ({f.get('reason')})"
                         for f in status.get("failures") or [])
    detail = f"; failed: {failures}" if failures else ""
    return Followed(f"finished with problems: {ready.get('reason')}: {ready.get('message')}"
                    f"{detail}", EXIT_FAILED)


def summary(obj: Mapping[str, Any], trigger: str, state: Followed) -> dict[str, Any]:
    """What `--output json` prints once the rotation is over (pure): public status only."""
    status = obj.get("status") or {}
    metadata = obj.get("metadata") or {}
    ready = _conditions(obj).get("Ready") or {}
    return {"policy": f"{metadata.get('namespace')}/{metadata.get('name')}", "trigger": trigger,
            "succeeded": state.exit_code == EXIT_OK, "reason": ready.get("reason"),
            "progress": status.get("progress") or {}, "failures": status.get("failures") or [],
            "currentVersions": status.get("currentVersions"),
            "lastRotationTime": status.get("lastRotationTime")}


def _target(text: str) -> tuple[str, str]:
    namespace, _, name = text.partition("/")
    if not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(
            f"{text!r}: name the RotationPolicy as NAMESPACE/NAME, e.g. acme-prod/quarterly")
    return namespace, name


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _rotate(args: argparse.Namespace) -> int:
    from kubernetes import client

    from tenantry import kube

    namespace, name = args.policy
    trigger = args.trigger or datetime.datetime.now(datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
    if len(trigger) > rotation_model.MAX_TRIGGER:
        return _fail(f"--trigger is {len(trigger)} characters; spec.trigger holds at most "
                     f"{rotation_model.MAX_TRIGGER}")
    api = kube.api_client(args.kubeconfig)
    custom = client.CustomObjectsApi(api)
    where = f"RotationPolicy {namespace}/{name}"
    try:
        try:
            patched = cast(dict[str, Any], custom.patch_namespaced_custom_object(
                common.GROUP, common.VERSION, namespace, rotation_model.PLURAL, name,
                {"spec": {"trigger": trigger}}))
        except client.ApiException as error:
            return _fail(f"cannot set spec.trigger of {where}: {error.status} {error.reason}")
        generation = int(patched["metadata"]["generation"])
        print(f"{where}: spec.trigger set to {trigger!r}", file=sys.stderr)
        if args.no_wait:
            print(f"follow it with: kubectl get rotationpolicy -n {namespace} {name} -w",
                  file=sys.stderr)
            if args.output == "json":
                print(json.dumps({"policy": f"{namespace}/{name}", "trigger": trigger,
                                  "generation": generation}, indent=2))
            return EXIT_OK
        deadline = time.monotonic() + args.timeout
        printed = ""
        while True:
            try:
                obj = cast(dict[str, Any], custom.get_namespaced_custom_object(
                    common.GROUP, common.VERSION, namespace, rotation_model.PLURAL, name))
            except client.ApiException as error:
                return _fail(f"cannot read {where}: {error.status} {error.reason}")
            state = follow(obj, trigger, generation)
            if state.line != printed:
                final = state.exit_code is not None and args.output == "text"
                print(state.line, file=sys.stdout if final else sys.stderr)
                printed = state.line
            if state.exit_code is not None:
                if args.output == "json":
                    print(json.dumps(summary(obj, trigger, state), indent=2))
                return state.exit_code
            if time.monotonic() >= deadline:
                print(f"timed out after {args.timeout:.0f}s; the rotation goes on: "
                      f"kubectl get rotationpolicy -n {namespace} {name} -w", file=sys.stderr)
                return EXIT_FAILED
            time.sleep(POLL_INTERVAL)
    finally:
        api.close()


def register(subparsers: Any) -> None:
    """Add `rotate` to the `tenantry` command's subparsers."""
    rotate = subparsers.add_parser(
        "rotate", help="rotate now through a RotationPolicy's trigger, and follow it",
        description="Set spec.trigger of a RotationPolicy (with your kubeconfig) and print "
                    "its progress until the operator has finished that rotation.")
    rotate.add_argument("policy", type=_target, metavar="NAMESPACE/NAME",
                        help="the RotationPolicy")
    rotate.add_argument("--trigger", help="the trigger value (default: the current UTC time)")
    rotate.add_argument("--no-wait", action="store_true",
                        help="set the trigger and return without following")
    rotate.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                        help="stop following after this long (default: %(default)s)")
    rotate.add_argument("--kubeconfig", help="default: $KUBECONFIG, then in-cluster")
    rotate.add_argument("--output", choices=("text", "json"), default="text",
                        help="json: the outcome as one JSON object on stdout, for pipelines")
    rotate.set_defaults(func=_rotate)
