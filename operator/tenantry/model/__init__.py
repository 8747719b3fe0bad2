"""The three resources, modelled once: pydantic specs and statuses, and CRDs generated from them."""
