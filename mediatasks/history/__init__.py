"""The job history: jobs and their tasks in SQLite (default) or PostgreSQL."""

from mediatasks.history.store import TERMINAL, History, JobRecord, TaskRecord

__all__ = ["TERMINAL", "History", "JobRecord", "TaskRecord"]
