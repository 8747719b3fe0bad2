"""kopf's diff base: in the status it writes anyway for Credentials, elsewhere an annotation."""

from __future__ import annotations

import json
from typing import Any

import kopf

from tenantry.controller import diffbase

ANNOTATION = "tenantry.dev/last-handled-configuration"


def _credential(**extra: Any) -> dict[str, Any]:
    return {"apiVersion": "tenantry.dev/v1alpha1", "kind": "Credential",
            "metadata": {"name": "api", "namespace": "shop", "annotations": {"team": "pay"}},
            "spec": {"scope": "platform", "fromSecret": {"name": "plain"}}, **extra}


def _tenant() -> dict[str, Any]:
    return {"apiVersion": "tenantry.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "acme"}, "spec": {"namespaces": [{"name": "acme-app"}]}}


def _stored(raw: dict[str, Any]) -> kopf.Patch:
    storage = diffbase.DiffBase()
    body = kopf.Body(raw)  # type: ignore[arg-type]
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    return patch


def test_a_credentials_diff_base_rides_in_its_status_write_alone() -> None:
    patch = _stored(_credential())
    assert set(patch) == {"status"}  # one PATCH, of the status subresource
    essence = json.loads(patch["status"][diffbase.STATUS_FIELD])
    assert essence == {"spec": {"scope": "platform", "fromSecret": {"name": "plain"}},
                       "metadata": {"annotations": {"team": "pay"}}}


def test_other_kinds_keep_theirs_in_an_annotation() -> None:
    patch = _stored(_tenant())
    assert "status" not in patch
    assert ANNOTATION in patch["metadata"]["annotations"]


def test_fetch_reads_the_status_and_a_handled_body_shows_no_change() -> None:
    storage = diffbase.DiffBase()
    raw = _credential()
    raw["status"] = {"conditions": [], **_stored(raw)["status"]}
    body = kopf.Body(raw)  # type: ignore[arg-type]
    assert storage.fetch(body=body) == storage.build(body=body)


def test_an_upgraded_credential_falls_back_to_its_old_annotation_which_never_counts() -> None:
    storage = diffbase.DiffBase()
    old = _credential()
    handled = json.dumps(storage.build(body=kopf.Body(old)))  # type: ignore[arg-type]
    old["metadata"]["annotations"][ANNOTATION] = handled + "\n"
    body = kopf.Body(old)  # type: ignore[arg-type]
    assert storage.fetch(body=body) == json.loads(handled)
    assert storage.build(body=body) == json.loads(handled)


def test_kopfs_own_progress_annotations_and_the_status_are_not_a_change() -> None:
    storage = diffbase.DiffBase()
    plain = storage.build(body=kopf.Body(_credential()))  # type: ignore[arg-type]
    busy = _credential(status={"conditions": [{"type": "Ready"}], diffbase.STATUS_FIELD: "{}"})
    busy["metadata"]["annotations"]["tenantry.dev/reconcile_credential"] = '{"retries":1}'
    assert storage.build(body=kopf.Body(busy)) == plain  # type: ignore[arg-type]


def test_a_touched_annotation_or_spec_is_a_change() -> None:
    storage = diffbase.DiffBase()
    plain = storage.build(body=kopf.Body(_credential()))  # type: ignore[arg-type]
    touched = _credential()
    touched["metadata"]["annotations"]["import-now"] = "1"
    assert storage.build(body=kopf.Body(touched)) != plain  # type: ignore[arg-type]
    respec = _credential()
    respec["spec"]["fromSecret"] = {"name": "other"}
    assert storage.build(body=kopf.Body(respec)) != plain  # type: ignore[arg-type]


def test_only_tenantry_credentials_are_kept_in_status() -> None:
    assert diffbase.in_status(kopf.Body(_credential()))  # type: ignore[arg-type]
    foreign = {**_credential(), "apiVersion": "example.com/v1"}
    assert not diffbase.in_status(kopf.Body(foreign))  # type: ignore[arg-type]


def _progress(raw: dict[str, Any]) -> kopf.Patch:
    storage = diffbase.Progress()
    body = kopf.Body(raw)  # type: ignore[arg-type]
    patch = kopf.Patch()
    storage.store(key=kopf.HandlerId("reconcile_credential"), record={"started": "now"},
                  body=body, patch=patch)
    storage.purge(key=kopf.HandlerId("reconcile_credential"), body=body, patch=patch)
    return patch


def test_a_handler_done_at_once_leaves_no_write_on_a_credential() -> None:
    assert dict(_progress(_credential())) == {}


def test_other_kinds_are_still_branded_for_kopf() -> None:
    assert _progress(_tenant())["metadata"]["annotations"] == {"tenantry.dev/kopf-managed": "yes"}
