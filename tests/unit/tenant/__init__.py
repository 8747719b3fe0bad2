"""Unit tests of the pure Tenant builders (controller/tenant)."""
