"""`tenantry check`, run through its argparse registration as the CLI will run it."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenantry.admission import check
from tests.unit.admission.admission_helpers import hardened_pod, wrap


def run(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `tenantry check <argv>`."""
    parser = argparse.ArgumentParser(prog="tenantry")
    check.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["check", *argv])
    out, err = io.StringIO(), io.StringIO()
    status = args.func(args, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def writable_deployment() -> dict[str, Any]:
    pod = hardened_pod()
    pod["spec"]["containers"][1]["securityContext"]["readOnlyRootFilesystem"] = False
    deployment = wrap(pod, "Deployment")
    deployment["metadata"] = {"name": "web", "namespace": "shop"}
    return deployment


def dump(*documents: dict[str, Any]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False)


CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}}
NODE_PORT = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "edge"},
             "spec": {"type": "NodePort", "ports": [{"port": 80}]}}


def test_multi_document_file_report_names_file_object_and_path(tmp_path: Path) -> None:
    manifest = tmp_path / "app.yaml"
    manifest.write_text(dump(CONFIG_MAP, writable_deployment(), hardened_pod(), NODE_PORT))
    status, out, _ = run([str(manifest)])
    assert status == check.EXIT_VIOLATIONS
    lines = out.splitlines()
    assert f"{manifest} (document 2): Deployment shop/web" in lines
    assert ("  spec.template.spec.containers[1].securityContext.readOnlyRootFilesystem: must be "
            "true") in out
    assert f"{manifest} (document 4): Service edge" in lines
    assert "hardened" not in out  # clean objects are only counted
    assert lines[-1] == ("3 objects checked, 2 with violations, 2 violations; "
                         "1 object of other kinds skipped")


def test_clean_manifests_exit_zero(tmp_path: Path) -> None:
    manifest = tmp_path / "ok.yaml"
    manifest.write_text(dump(hardened_pod(), wrap(hardened_pod(), "CronJob"), CONFIG_MAP))
    status, out, _ = run([str(manifest)])
    assert status == check.EXIT_OK
    assert out == "2 objects checked, 0 with violations, 0 violations; " \
                  "1 object of other kinds skipped\n"


def test_list_items_are_checked_and_located(tmp_path: Path) -> None:
    manifest = tmp_path / "list.yaml"
    manifest.write_text(dump({"apiVersion": "v1", "kind": "List",
                              "items": [hardened_pod(), writable_deployment()]}))
    status, out, _ = run([str(manifest)])
    assert status == check.EXIT_VIOLATIONS
    assert f"{manifest} (document 1, items[1]): Deployment shop/web" in out.splitlines()


def test_stdin_as_kustomize_output() -> None:
    # A leading and a trailing "---" (the trailing one opens an empty document, which is skipped).
    stdin = "---\n" + dump(CONFIG_MAP, writable_deployment()) + "---\n"
    status, out, _ = run(["-"], stdin=stdin)
    assert status == check.EXIT_VIOLATIONS
    assert "<stdin> (document 2): Deployment shop/web" in out.splitlines()


def test_json_output() -> None:
    status, out, _ = run(["-", "--output", "json"], stdin=dump(writable_deployment(), CONFIG_MAP))
    assert status == check.EXIT_VIOLATIONS
    report = json.loads(out)
    assert report["summary"] == {"checked": 1, "withViolations": 1, "violations": 1,
                                 "exempted": 0, "skipped": 1, "errors": 0}
    [obj] = report["objects"]
    assert (obj["file"], obj["document"], obj["kind"], obj["namespace"], obj["name"]) == (
        "<stdin>", 1, "Deployment", "shop", "web")
    assert obj["violations"] == [{
        "rule": "readOnlyRootFilesystem",
        "fieldPath": "spec.template.spec.containers[1].securityContext.readOnlyRootFilesystem",
        "message": obj["violations"][0]["message"],
        "requiredValue": "true",
        "container": "sidecar",
        "image": "registry.example/app:1.0",
    }]


def test_directories_are_searched_recursively(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "deploy.yml").write_text(dump(writable_deployment()))
    (tmp_path / "pod.json").write_text(json.dumps(hardened_pod()))
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "bad.yaml").write_text(dump(writable_deployment()))
    (tmp_path / "README.md").write_text("# not a manifest: [")
    status, out, _ = run([str(tmp_path), "-o", "json"])
    assert status == check.EXIT_VIOLATIONS
    files = [obj["file"] for obj in json.loads(out)["objects"]]
    assert files == [str(tmp_path / "base" / "deploy.yml"), str(tmp_path / "pod.json")]


def test_unreadable_or_invalid_input_exits_two(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Pod\nspec: [unclosed\n")
    status, out, _ = run([str(broken), str(tmp_path / "missing.yaml")])
    assert status == check.EXIT_ERROR
    assert f"error: {broken}: not valid YAML/JSON" in out
    assert "missing.yaml: cannot read" in out
    status, out, _ = run(["-"], stdin="- just\n- a list\n")
    assert status == check.EXIT_ERROR
    assert "<stdin> (document 1): not an object" in out


def test_errors_win_over_violations(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(dump(writable_deployment()))
    (tmp_path / "b.yaml").write_text("{")
    assert run([str(tmp_path)])[0] == check.EXIT_ERROR


def tenant_manifest(tmp_path: Path, **pod_security: Any) -> Path:
    path = tmp_path / "tenant.yaml"
    path.write_text(dump({
        "apiVersion": "tenantry.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "shop"},
        "spec": {
            "members": [{"kind": "User", "name": "alice", "role": "owner"}],
            "namespaces": [{"name": "shop"}, {"name": "legacy"}],
            "quota": {"servicesNodePorts": 1},
            "podSecurity": pod_security,
        },
    }))
    return path


def test_tenant_exemptions_and_quota_apply(tmp_path: Path) -> None:
    tenant = tenant_manifest(tmp_path, mode="Warn", exemptions=[
        {"rule": "readOnlyRootFilesystem", "namespace": "shop", "reason": "writes /var/cache"}])
    stdin = dump(writable_deployment(), NODE_PORT)
    status, out, _ = run(["-", "--tenant", str(tenant)], stdin=stdin)
    assert status == check.EXIT_OK
    assert "exempt: spec.template.spec.containers[1].securityContext.readOnlyRootFilesystem" in out
    assert "(exemption: writes /var/cache)" in out
    assert out.splitlines()[-1] == ("2 objects checked, 0 with violations, 0 violations, "
                                    "1 exempted")


def test_namespace_option_stands_for_objects_without_one(tmp_path: Path) -> None:
    tenant = tenant_manifest(tmp_path, exemptions=[
        {"rule": "readOnlyRootFilesystem", "namespace": "legacy", "reason": "old"}])
    pod = hardened_pod()
    del pod["metadata"]["namespace"]
    pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    assert run(["-", "--tenant", str(tenant)], stdin=dump(pod))[0] == check.EXIT_VIOLATIONS
    assert run(["-", "--tenant", str(tenant), "-n", "legacy"], stdin=dump(pod))[0] == \
        check.EXIT_OK


def test_tenant_mode_does_not_soften_the_exit_status(tmp_path: Path) -> None:
    tenant = tenant_manifest(tmp_path, mode="Audit")
    status, _, _ = run(["-", "--tenant", str(tenant)], stdin=dump(writable_deployment()))
    assert status == check.EXIT_VIOLATIONS


@pytest.mark.parametrize("content", [
    "kind: ConfigMap\n", "kind: Tenant\nspec: {members: []}\n", "kind: [Tenant\n"])
def test_bad_tenant_file_exits_two(tmp_path: Path, content: str) -> None:
    path = tmp_path / "tenant.yaml"
    path.write_text(content)
    status, out, err = run(["-", "--tenant", str(path)], stdin=dump(hardened_pod()))
    assert status == check.EXIT_ERROR
    assert out == ""
    assert err.startswith(f"error: {path}:")


def test_register_adds_the_check_subcommand() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    check.register(sub)
    args = parser.parse_args(["check", "a.yaml", "b/", "-o", "json", "--tenant", "t.yaml"])
    assert args.func is check.run
    assert (args.paths, args.output, args.tenant, args.namespace) == (
        ["a.yaml", "b/"], "json", "t.yaml", None)
    with pytest.raises(SystemExit):
        parser.parse_args(["check"])  # at least one path


def test_missing_tenant_file_exits_two(tmp_path: Path) -> None:
    status, _, err = run(["-", "--tenant", str(tmp_path / "absent.yaml")],
                         stdin=dump(hardened_pod()))
    assert status == check.EXIT_ERROR
    assert "absent.yaml" in err
