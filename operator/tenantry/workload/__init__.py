"""The workload side of credential exchange: `tenantry credentials fetch`, run in a pod."""
