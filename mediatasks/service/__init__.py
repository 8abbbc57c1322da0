"""The job service: one lifecycle, one event log; Celery, SQL and the bus sit behind Protocols."""

from mediatasks.service.jobs import JobService
from mediatasks.service.lifecycle import TERMINAL, IllegalTransition, batch_status
from mediatasks.service.reads import JobNotFound
from mediatasks.service.records import Event, JobRecord, TaskRecord

__all__ = ["TERMINAL", "Event", "IllegalTransition", "JobNotFound", "JobRecord", "JobService",
           "TaskRecord", "batch_status"]
