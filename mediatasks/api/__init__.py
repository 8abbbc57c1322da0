"""The HTTP API: an adapter over the job service, like the CLI."""
