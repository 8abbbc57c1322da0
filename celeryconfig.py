"""Celery settings, translated from mediatasks' one typed settings object (MEDIATASKS_* variables).

Why each value is what it is: docs/configuration.md.
"""

from kombu.entity import Exchange, Queue

from mediatasks.settings import get_settings

_s = get_settings()

broker_url = _s.broker_url
result_backend = _s.backend_url
broker_connection_retry_on_startup = True
broker_transport_options = {
    # Longer than any chunk encode plus the longest retry countdown, or a running chunk is
    # delivered to a second worker.
    "visibility_timeout": _s.visibility_timeout,
    # How often each worker looks for deliveries older than the timeout (a worker that died):
    # a third of the timeout, at most every 30 s, so recovery takes at most ~1.3x the timeout.
    "unacked_restore_interval": max(1, min(30, _s.visibility_timeout // 3)),
    "unacked_restore_throttle": 1,
}
result_backend_transport_options = {"visibility_timeout": _s.visibility_timeout}

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
if _s.signing:
    # Task and control messages are signed with this worker's key and accepted only when signed by
    # a certificate of the store (app.setup_security() in mediatasks.cluster.app registers it).
    # Results and events stay JSON: they are read from the password-protected result backend and
    # by Flower, and never run anything.
    task_serializer = "auth"
    accept_content = ["auth"]
    result_accept_content = ["json"]
    security_key = str(_s.signing_key)
    security_certificate = str(_s.signing_cert)
    security_cert_store = _s.signing_cert_store
    security_digest = "sha256"

task_queues: tuple[Queue, ...] = (Queue("cpu"), Queue("gpu"), Queue("io"))
if _s.broker_url.startswith(("amqp://", "amqps://", "pyamqp://")):
    # RabbitMQ: a worker's unacknowledged chunks go back to the queue as soon as its connection
    # drops (no visibility timeout). Quorum queues are replicated and durable; Celery then turns off
    # global QoS (worker_detect_quorum_queues) and sends countdowns (retries) through RabbitMQ's
    # native delayed delivery, which needs each queue bound to a topic exchange.
    task_queues = tuple(Queue(name, Exchange(name, type="topic"), routing_key=name,
                              queue_arguments={"x-queue-type": "quorum"})
                        for name in ("cpu", "gpu", "io"))
    broker_transport_options = {"confirm_publish": True}
    worker_detect_quorum_queues = True
task_default_queue = "io"
# Encodes are routed per signature by the encoder profile (mediatasks.profiles.queue_for).
task_routes = {
    "mediatasks.encode_chunk": {"queue": "cpu"},
    "mediatasks.*": {"queue": "io"},
}

task_acks_late = True
worker_prefetch_multiplier = 1
task_reject_on_worker_lost = False
# A pool process that dies (OOM killer, kill -9 of the child) fails its task with WorkerLostError;
# this re-sends it like a retry, after the task's default_retry_delay and within max_retries, so a
# chunk that kills its process every time cannot loop forever.
task_retry_on_worker_lost = True
# A redelivered task whose result is already SUCCESS (the worker died between storing the result
# and acking) is not run again; its chain goes on once (result_extended records the children).
worker_deduplicate_successful_tasks = True
task_track_started = True
task_soft_time_limit = _s.task_soft_time_limit
task_time_limit = _s.task_time_limit
# A broker that restarts must not fail the job. Cancelling running tasks on a connection loss
# stores them as REVOKED once the broker is back, and a chord counts that as a failed chunk; so
# encodes run on through a broker restart. Their ack may then be lost and the chunk delivered again
# after the visibility timeout: every task is idempotent (docs/decisions.md) and a copy whose result
# is already stored is skipped (worker_deduplicate_successful_tasks).
worker_cancel_long_running_tasks_on_connection_loss = False
# Results written while the broker restarts are retried (up to ~10 minutes), not lost.
result_backend_always_retry = True
result_backend_max_retries = 60
worker_soft_shutdown_timeout = 60
worker_enable_soft_shutdown_on_idle = True

worker_send_task_events = True
task_send_sent_event = True
result_extended = True
result_expires = _s.result_expires
result_chord_join_timeout = 30
# The job's cleanup errback also fires when a chunk fails (Celery's future default); siblings
# still encoding then fail on their missing directory instead of finishing for nothing.
task_allow_error_cb_on_chord_header = True
