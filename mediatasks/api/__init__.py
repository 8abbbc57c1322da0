"""The HTTP API: FastAPI over the job service (`mediatasks api`; docs/api.md)."""
