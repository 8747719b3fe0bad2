"""RotationPolicy: scheduled and on-demand rotation, as small steps coordinated through status.

`schedule` (cron, pure), `plan` (what to do next, pure), `handlers` (the kopf handlers: I/O
only) and `cli` (`tenantry rotate`). Only the `Credentials` target is carried out so far:
re-encrypting the selected Credentials under the keyring's primary version, in batches
checkpointed in status.
"""
