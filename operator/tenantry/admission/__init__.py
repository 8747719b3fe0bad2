"""Admission: the hardening rules every pod in a tenant namespace must meet, and the tools that
apply them.

Pure parts (no I/O): `violation` (what a rule reports), `podspecs` (the pod inside any pod-bearing
kind), `psa` and `hardening` (the checks: Pod Security Admission's, then Tenantry's own), `rules`
(the registry that runs them), `services` (Services against the tenant's quota) and `policy` (the
decision under the tenant's mode and exemptions). `check` is the offline `tenantry check` command
built on them; the webhook server builds on `policy.evaluate`.
"""
