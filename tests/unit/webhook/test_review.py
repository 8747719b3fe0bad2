"""AdmissionReview v1 parsing (malformed -> MalformedReview with a reason) and responses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tenantry.webhook import review
from tests.unit.admission.admission_helpers import hardened_pod
from tests.unit.webhook.webhook_unit_helpers import review_body


def _body(**request: Any) -> bytes:
    document = review_body(hardened_pod())
    document["request"].update(request)
    return json.dumps(document).encode()


def test_parses_what_the_apiserver_sends() -> None:
    pod = hardened_pod()
    request = review.parse_review(json.dumps(review_body(pod, dry_run=True)).encode())
    assert request.uid == "705ab4f5-6393-11e8-b7cc-42010a800002"
    assert request.kind == review.GroupVersionKind("", "v1", "Pod")
    assert request.kind.api_version == "v1" and str(request.kind) == "Pod.v1"
    assert request.resource.resource == "pods"
    assert request.operation == "CREATE" and request.namespace == "team-a"
    assert request.user == review.UserInfo("alice", "u-1", ("team-a",))
    assert request.object == pod and request.old_object is None
    assert request.dry_run is True
    assert request.display_name == "hardened"


def test_typed_object_takes_kind_from_the_request() -> None:
    pod = hardened_pod()
    del pod["apiVersion"], pod["kind"]
    document = review_body(pod, kind="Deployment")
    request = review.parse_review(json.dumps(document).encode())
    typed = request.typed_object()
    assert typed is not None
    assert (typed["apiVersion"], typed["kind"]) == ("apps/v1", "Deployment")


def test_display_name_of_generated_names() -> None:
    pod = hardened_pod()
    pod["metadata"] = {"generateName": "web-"}
    request = review.parse_review(json.dumps(review_body(pod)).encode())
    assert request.display_name == "web-*"


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "empty body"),
    (b"{", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"42", "JSON object"),
    (json.dumps({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1"}).encode(),
     "apiVersion must be admission.k8s.io/v1"),
    (json.dumps({"kind": "Pod", "apiVersion": "v1"}).encode(), "kind must be AdmissionReview"),
    (json.dumps({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}).encode(),
     "request is required"),
    (json.dumps({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
                 "request": []}).encode(), "request must be an object"),
    (_body(uid=None), "request.uid must be a non-empty string"),
    (_body(uid=7), "request.uid"),
    (_body(kind=None), "request.kind is required"),
    (_body(kind={"group": 1, "version": "v1", "kind": "Pod"}), "request.kind.group"),
    (_body(resource={"group": "", "version": "v1"}), "request.resource.resource"),
    (_body(operation="APPLY"), "request.operation must be one of"),
    (_body(object=None), "request.object is required"),
    (_body(object="pod"), "request.object must be an object"),
    (_body(operation="UPDATE"), "request.oldObject is required"),
    (_body(namespace=3), "request.namespace"),
    (_body(dryRun="true"), "request.dryRun must be a boolean"),
    (_body(userInfo="alice"), "request.userInfo must be an object"),
    (_body(userInfo={"groups": [1]}), "request.userInfo.groups"),
])
def test_malformed_reviews_say_why(body: bytes, reason: str) -> None:
    with pytest.raises(review.MalformedReview, match=reason.replace(".", r"\.")):
        review.parse_review(body)


def test_content_type_must_be_json() -> None:
    assert review.parse_review(_body(), "application/json; charset=utf-8").uid
    assert review.parse_review(_body(), None).uid
    with pytest.raises(review.MalformedReview, match="Content-Type"):
        review.parse_review(_body(), "application/yaml")


def test_delete_needs_no_object() -> None:
    document = review_body(None, operation="DELETE", old=hardened_pod())
    request = review.parse_review(json.dumps(document).encode())
    assert request.object is None and request.old_object is not None


def test_responses() -> None:
    allowed = review.review_response("u", review.Verdict.allow())
    assert allowed == {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "response": {"uid": "u", "allowed": True}}
    denied = review.review_response("u", review.Verdict.deny(
        "no", warnings=("w",), audit_annotations={"mode": "Deny"}))["response"]
    assert denied == {"uid": "u", "allowed": False,
                      "status": {"code": 403, "reason": "Forbidden", "message": "no"},
                      "warnings": ["w"], "auditAnnotations": {"mode": "Deny"}}
    unavailable = review.review_response("u", review.Verdict.deny("later", code=503))
    assert unavailable["response"]["status"]["reason"] == "ServiceUnavailable"


def test_warnings_are_bounded() -> None:
    verdict = review.Verdict.allow(warnings=tuple("x" * 1000 for _ in range(100)))
    warnings = review.review_response("u", verdict)["response"]["warnings"]
    assert len(warnings) == review.MAX_WARNINGS + 1
    assert all(len(w) <= review.MAX_WARNING_LENGTH for w in warnings)
    assert warnings[-1] == "... and 36 more"


def test_bad_request_is_a_status() -> None:
    assert review.bad_request("why") == {
        "apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 400,
        "reason": "BadRequest", "message": "malformed AdmissionReview: why"}
