"""One protection gate per operator, not per Tenant: kopf copies the memo for each object."""

from __future__ import annotations

import copy

import kopf

from tenantry.controller.tenant import handlers


async def test_every_tenants_memo_shares_the_gate_made_at_start_up() -> None:
    memo = kopf.Memo()
    await handlers.start_children(memo=memo)
    try:
        # What kopf hands each object's handlers: a shallow copy of the operator's memo.
        first, second = copy.copy(memo), copy.copy(memo)
        gate = handlers._protection_gate(first)
        assert handlers._protection_gate(second) is gate
        # Seen enforced once (one dry-run probe), it is enforced for every later Tenant too.
        gate.enforced = True
        assert handlers._protection_gate(copy.copy(memo)).enforced
    finally:
        await handlers.stop_children(memo=memo)
