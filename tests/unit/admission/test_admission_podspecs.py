"""Finding the pod in every pod-bearing kind, with the prefix of its paths."""

from __future__ import annotations

import pytest

from tenantry.admission import podspecs, rules
from tests.unit.admission.admission_helpers import WRAPPERS, hardened_pod, wrap


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
def test_template_kinds_give_their_pod_and_prefix(kind: str) -> None:
    pod = hardened_pod()
    pod["metadata"]["annotations"] = {"a": "b"}
    ref = podspecs.find_pod(wrap(pod, kind))
    assert ref is not None
    assert ref.prefix == WRAPPERS[kind][1]
    assert ref.spec == pod["spec"]
    assert ref.metadata["annotations"] == {"a": "b"}


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
def test_violations_in_templates_carry_the_object_path(kind: str) -> None:
    pod = hardened_pod()
    pod["spec"]["containers"][1]["securityContext"]["readOnlyRootFilesystem"] = False
    [violation] = rules.check_object(wrap(pod, kind))
    assert violation.field_path == (
        WRAPPERS[kind][1] + "spec.containers[1].securityContext.readOnlyRootFilesystem")


def test_cronjob_path_is_spelled_out() -> None:
    pod = hardened_pod()
    pod["spec"]["hostNetwork"] = True
    [violation] = rules.check_object(wrap(pod, "CronJob"))
    assert violation.field_path == "spec.jobTemplate.spec.template.spec.hostNetwork"


def test_pod_has_no_prefix() -> None:
    ref = podspecs.find_pod(hardened_pod())
    assert ref is not None and ref.prefix == ""


@pytest.mark.parametrize("obj", [
    {"apiVersion": "v1", "kind": "ConfigMap"},
    {"apiVersion": "example.com/v1", "kind": "Deployment",
     "spec": {"template": {"spec": {"containers": []}}}},
    {"apiVersion": "apps/v1", "kind": "Job", "spec": {"template": {"spec": {}}}},
    {"kind": "Pod", "spec": {}},
    {"apiVersion": "v1", "kind": "ReplicationController", "spec": {}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {"metadata": {}}}},
    {"apiVersion": "v1", "kind": "Pod"},
])
def test_objects_without_a_pod(obj: podspecs.Obj) -> None:
    assert podspecs.find_pod(obj) is None


def test_any_version_of_a_group_counts() -> None:
    obj = {"apiVersion": "apps/v1beta2", "kind": "DaemonSet",
           "spec": {"template": {"spec": {"containers": []}}}}
    assert podspecs.is_pod_bearing(obj)
    assert podspecs.api_group("apps/v1") == "apps"
    assert podspecs.api_group("v1") == ""


def test_containers_and_images_cover_all_three_lists_in_order() -> None:
    spec = {
        "containers": [{"name": "a", "image": "img-a"}],
        "initContainers": [{"name": "i", "image": "img-i"}],
        "ephemeralContainers": [{"name": "e"}],
    }
    assert [path for path, _ in podspecs.containers(spec)] == [
        "spec.initContainers[0]", "spec.containers[0]", "spec.ephemeralContainers[0]"]
    assert podspecs.images(spec) == ["img-i", "img-a", ""]
