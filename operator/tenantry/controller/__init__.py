"""The operator: kopf handlers (thin) around pure builders, one package per resource kind."""
