"""Tenantry: a Kubernetes operator and policy controller for secure multi-tenancy."""

__version__ = "0.1.0"
