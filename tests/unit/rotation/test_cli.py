"""`tenantry rotate`: what each status means for the command that follows a trigger."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from tenantry.controller.rotation import cli


def _policy(generation: int = 3, observed: int | None = 3, trigger: str | None = "t1", *,
            ready: tuple[str, str] = ("True", "RotationSucceeded"), rotating: bool = False,
            failures: list[dict[str, str]] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "conditions": [{"type": "Ready", "status": ready[0], "reason": ready[1],
                        "message": "details"}],
        "progress": {"reencrypted": 3, "total": 5, "skipped": 1, "failed": 1},
        "failures": failures or []}
    if observed is not None:
        status["observedGeneration"] = observed
    if trigger is not None:
        status["lastHandledTrigger"] = trigger
    if rotating:
        status["rotation"] = {"id": "trigger:t1"}
    return {"metadata": {"generation": generation}, "status": status}


def test_waits_until_the_operator_has_seen_the_trigger() -> None:
    state = cli.follow(_policy(observed=2), "t1", 3)
    assert (state.exit_code, state.line) == (None, "waiting for the operator to see the trigger")


def test_reports_progress_while_rotating() -> None:
    state = cli.follow(_policy(rotating=True, ready=("False", "InProgress")), "t1", 3)
    assert state.exit_code is None
    assert state.line == "rotating: 3/5 re-encrypted, 1 already current, 1 failed"


def test_done_when_handled_and_ready() -> None:
    state = cli.follow(_policy(), "t1", 3)
    assert state.exit_code == cli.EXIT_OK
    assert state.line.startswith("done: 3/5 re-encrypted")


def test_failed_credentials_are_named_and_exit_1() -> None:
    state = cli.follow(_policy(ready=("False", "CredentialsFailed"),
                               failures=[{"name": "db", "reason": "TamperDetected"}]), "t1", 3)
    assert state.exit_code == cli.EXIT_FAILED
    assert "failed: db (TamperDetected)" in state.line


def test_an_invalid_policy_stops_following_with_its_reason() -> None:
    state = cli.follow(_policy(trigger=None, ready=("False", "TargetNotAllowed")), "t1", 3)
    assert state.exit_code == cli.EXIT_FAILED
    assert state.line == "not rotating: TargetNotAllowed: details"


def test_an_earlier_rotation_still_running_is_waited_for() -> None:
    state = cli.follow(_policy(trigger="t0", rotating=True, ready=("False", "InProgress")),
                       "t1", 3)
    assert state.exit_code is None
    assert "in progress to finish first" in state.line


@pytest.mark.parametrize("text", ["quarterly", "/quarterly", "acme/", "a/b/c"])
def test_the_policy_is_named_namespace_slash_name(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="NAMESPACE/NAME"):
        cli._target(text)


def test_a_masterkey_rotation_waiting_for_its_backup_prints_the_command_and_waits() -> None:
    obj = _policy(ready=("False", "AwaitingBackup"))
    obj["status"]["masterKey"] = {"rotation": {"step": "AwaitingBackup", "newVersion": "v2"}}
    obj["status"]["conditions"].append({
        "type": "AwaitingBackup", "status": "True", "reason": "BackupNotConfirmed",
        "message": "run `tenantry keyring confirm-backup tenantry-system/master ...`"})
    followed = cli.follow(obj, "t1", 3)
    assert followed.exit_code is None
    assert followed.line.startswith("awaiting backup: run `tenantry keyring confirm-backup")
    obj["status"]["masterKey"]["rotation"]["step"] = "Promoting"
    obj["status"]["conditions"][-1]["status"] = "False"
    obj["status"]["conditions"].append({"type": "Rotating", "status": "True",
                                        "message": "making key version v2 primary"})
    assert cli.follow(obj, "t1", 3) == cli.Followed("Promoting: making key version v2 primary")
