"""mediatasks: frame-exact chunked video transcoding on a Celery cluster."""

from mediatasks.celery_app import app

__all__ = ["app"]
__version__ = "0.1.0"
