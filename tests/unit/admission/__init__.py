"""Unit tests of the admission rules, the tenant policy decision and `tenantry check`."""
