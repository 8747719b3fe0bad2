"""A real local control plane and PostgreSQL for tests and `tenantry dev up`."""
