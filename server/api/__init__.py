"""The HTTP API under /v1, one module per resource."""
