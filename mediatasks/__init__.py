"""mediatasks: frame-exact chunked video transcoding on a Celery cluster.

Importing the package loads neither Celery nor SQLAlchemy; ``mediatasks.app`` (what
``celery -A mediatasks`` looks up) brings the Celery application in on first use.
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "app":
        from mediatasks.cluster.app import app

        return app
    raise AttributeError(f"module 'mediatasks' has no attribute {name!r}")
