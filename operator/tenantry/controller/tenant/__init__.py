"""Tenant controller: a Tenant spec in, the Kubernetes objects that make it real out.

The modules here are pure builders (no I/O, no clock, no client): the same spec always yields the
same list of plain dicts, ready for server-side apply. The kopf handlers that apply them, watch
the children and write status live beside them and are the only code here that talks to the API.

    meta        labels, owner references, object identities shared by every builder
    namespaces  the Namespace objects and the ownership decision (create / ours / adopt / conflict)
    network     default-deny, intra-tenant, DNS and egress-allow-list NetworkPolicies
    quota       ResourceQuota and LimitRange
    rbac        the four tier ClusterRoles and the per-tenant bindings
    desired     everything for one tenant in apply order, and what to prune after a spec change
"""
