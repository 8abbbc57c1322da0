"""Celery as an adapter: the application, tasks, canvases, dispatch, signals, worker start-up,
the live event bus and the private cluster of `mediatasks run`."""
