"""kopf's diff base: in the status they write anyway for Credentials and Tenants, elsewhere an
annotation."""

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


def _tenant(**extra: Any) -> dict[str, Any]:
    return {"apiVersion": "tenantry.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "acme", "uid": "u-1"},
            "spec": {"namespaces": [{"name": "acme-app"}]}, **extra}


def _policy() -> dict[str, Any]:
    return {"apiVersion": "tenantry.dev/v1alpha1", "kind": "RotationPolicy",
            "metadata": {"name": "keys"}, "spec": {"schedule": "@weekly"}}


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
    patch = _stored(_policy())
    assert "status" not in patch
    assert ANNOTATION in patch["metadata"]["annotations"]


def test_fetch_reads_the_status_and_a_handled_body_shows_no_change() -> None:
    storage = diffbase.DiffBase()
    raw = _credential()
    raw["status"] = {"conditions": [], **_stored(raw)["status"]}
    body = kopf.Body(raw)  # type: ignore[arg-type]
    assert storage.fetch(body=body) == storage.build(body=body)


def _upgraded(raw: dict[str, Any], *, generation: int = 3) -> dict[str, Any]:
    """`raw` as an operator that kept the diff base in an annotation left it: handled at
    `generation`, its status saying so."""
    storage = diffbase.DiffBase()
    handled = json.dumps(storage.build(body=kopf.Body(raw)))  # type: ignore[arg-type]
    raw["metadata"].setdefault("annotations", {})[ANNOTATION] = handled + "\n"
    raw["metadata"]["generation"] = generation
    raw["status"] = {"observedGeneration": generation, "conditions": []}
    return raw


def test_an_upgraded_credential_falls_back_to_its_old_annotation_which_never_counts() -> None:
    storage = diffbase.DiffBase()
    handled = storage.build(body=kopf.Body(_credential()))  # type: ignore[arg-type]
    body = kopf.Body(_upgraded(_credential()))  # type: ignore[arg-type]
    assert storage.fetch(body=body) == handled
    assert storage.build(body=body) == handled


def test_a_new_credential_with_a_forged_annotation_is_still_handled() -> None:
    """A tenant's admin creates a Credential claiming, in kopf's old annotation, that it was
    handled already. A new object has no status (the apiserver drops it on create), so the
    annotation is nobody's word: kopf gets no diff base and handles the create."""
    storage = diffbase.DiffBase()
    raw = _credential()
    raw["metadata"]["generation"] = 1
    claimed = json.dumps(storage.build(body=kopf.Body(raw)))  # type: ignore[arg-type]
    raw["metadata"]["annotations"][ANNOTATION] = claimed
    assert storage.fetch(body=kopf.Body(raw)) is None  # type: ignore[arg-type]
    raw["status"] = {"conditions": []}  # status, but not the operator's handling
    assert storage.fetch(body=kopf.Body(raw)) is None  # type: ignore[arg-type]


def test_an_annotation_forged_with_a_new_spec_on_an_upgraded_object_hides_no_change() -> None:
    """On an object an older operator handled (annotation, no status record), whoever may
    patch it changes the spec and rewrites the annotation to match: the spec's new generation
    is not the one the status says was handled, so kopf handles it."""
    storage = diffbase.DiffBase()
    for raw in (_upgraded(_credential()), _upgraded(_tenant())):
        raw["spec"]["fromSecret" if raw["kind"] == "Credential" else "namespaces"] = (
            {"name": "other"} if raw["kind"] == "Credential" else [{"name": "elsewhere"}])
        raw["metadata"]["generation"] += 1
        raw["metadata"]["annotations"][ANNOTATION] = json.dumps(
            storage.build(body=kopf.Body(raw)))  # type: ignore[arg-type]
        body = kopf.Body(raw)  # type: ignore[arg-type]
        assert storage.fetch(body=body) is None
        assert diffbase.handled(body) is not None


def test_other_kinds_still_trust_their_annotation() -> None:
    storage = diffbase.DiffBase()
    raw = _policy()
    raw["metadata"]["annotations"] = {ANNOTATION: json.dumps(
        storage.build(body=kopf.Body(raw)))}  # type: ignore[arg-type]
    assert storage.fetch(body=kopf.Body(raw)) == storage.build(  # type: ignore[arg-type]
        body=kopf.Body(raw))  # type: ignore[arg-type]


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
    assert _progress(_policy())["metadata"]["annotations"] == {"tenantry.dev/kopf-managed": "yes"}


def test_a_handler_done_at_once_leaves_no_write_on_a_tenant() -> None:
    assert dict(_progress(_tenant())) == {}


def test_a_tenants_diff_base_is_kept_in_its_status_too() -> None:
    assert diffbase.in_status(kopf.Body(_tenant()))  # type: ignore[arg-type]
    patch = _stored(_tenant())
    assert set(patch) == {"status"}
    assert json.loads(patch["status"][diffbase.STATUS_FIELD]) == {
        "spec": {"namespaces": [{"name": "acme-app"}]}}


def test_a_tenant_handler_writes_it_and_kopf_then_has_nothing_to_write() -> None:
    storage = diffbase.DiffBase()
    body = kopf.Body(_tenant())  # type: ignore[arg-type]
    encoded = diffbase.handled(body)
    assert encoded is not None
    assert json.loads(encoded) == storage.build(body=body)  # what kopf would store
    diffbase.written(body, encoded)
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert dict(patch) == {}
    # Only once: a later store of the same object (another change) is kopf's to write again.
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert patch["status"][diffbase.STATUS_FIELD] == encoded


def test_kopf_still_stores_what_the_handler_did_not_write() -> None:
    storage = diffbase.DiffBase()
    body = kopf.Body(_tenant())  # type: ignore[arg-type]
    diffbase.written(body, '{"spec":{"namespaces":[]}}')  # an older body's
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert json.loads(patch["status"][diffbase.STATUS_FIELD]) == storage.build(body=body)


def test_a_handled_tenant_records_nothing_again() -> None:
    raw = _tenant()
    raw["status"] = {"conditions": [], **_stored(raw)["status"]}
    assert diffbase.handled(kopf.Body(raw)) is None  # type: ignore[arg-type]
    raw["spec"]["namespaces"].append({"name": "acme-web"})
    assert diffbase.handled(kopf.Body(raw)) is not None  # type: ignore[arg-type]


def test_other_kinds_are_not_recorded_by_their_handlers() -> None:
    assert diffbase.handled(kopf.Body(_policy())) is None  # type: ignore[arg-type]


def test_an_annotation_forged_on_a_tenant_hides_no_change() -> None:
    """Whoever may patch a Tenant (not its status) claims a new spec was handled already:
    the status record wins, so kopf still sees the change."""
    storage = diffbase.DiffBase()
    raw = _tenant()
    raw["status"] = {"conditions": [], **_stored(raw)["status"]}
    raw["spec"]["namespaces"] = [{"name": "elsewhere"}]
    claimed = json.dumps(storage.build(body=kopf.Body(raw)))  # type: ignore[arg-type]
    raw["metadata"]["annotations"] = {ANNOTATION: claimed + "\n"}
    body = kopf.Body(raw)  # type: ignore[arg-type]
    assert storage.fetch(body=body) != storage.build(body=body)
    assert diffbase.handled(body) is not None


def test_the_essence_is_kopfs_own_without_copying_what_it_drops() -> None:
    """`DiffBase.build` leaves the status and managedFields out of what kopf copies; the
    essence is exactly the one kopf's own storage builds, extra fields included."""
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix="tenantry.dev",
                                            key=diffbase.KEY)
    for raw in (_policy(), _policy() | {"status": {"phase": "x"}}):
        raw["metadata"] |= {"labels": {"team": "pay"}, "uid": "u-2", "resourceVersion": "7",
                            "annotations": {"note": "kept",
                                            "kubectl.kubernetes.io/last-applied-configuration":
                                                "{}"},
                            "managedFields": [{"manager": "kubectl", "fieldsV1": {}}]}
        body = kopf.Body(raw)  # type: ignore[arg-type]
        for fields in ([], [("spec",)], [("status", "phase")], ["metadata.uid"]):
            assert diffbase.DiffBase().build(body=body, extra_fields=fields) == \
                kopfs.build(body=body, extra_fields=fields)
    built = diffbase.DiffBase().build(body=kopf.Body(raw),  # type: ignore[arg-type]
                                      extra_fields=[("status", "phase")])
    assert built["status"] == {"phase": "x"}  # type: ignore[typeddict-item]
