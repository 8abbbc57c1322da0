"""Canvases are data: pure functions from a spec or a plan to Celery signatures."""

from __future__ import annotations

from celery import chain, chord
from celery.canvas import Signature

from mediatasks import tasks
from mediatasks.models import JobPlan, JobSpec


def job_workflow(spec: JobSpec) -> Signature:
    """probe -> plan -> [chord of encodes -> concat] -> mux -> verify -> publish.

    The number of chunks is only known once plan has run, so plan replaces itself with
    ``encode_chord(plan)``; the chain's remaining tasks keep their ids and run after it.
    """
    s = spec.model_dump(mode="json")
    wf = chain(
        tasks.probe.si(spec=s),
        tasks.plan.s(spec=s),
        tasks.mux.s(spec=s),
        tasks.verify.s(spec=s),
        tasks.publish.s(spec=s),
    )
    wf.link_error(tasks.cleanup.si(job_id=spec.job_id, attempt=spec.attempt))
    return wf


def encode_chord(plan: JobPlan) -> Signature:
    """One encode per chunk on the encoder's queue, the audio once on io, then concat. A remux
    encodes nothing: the audio task alone, then concat hands on the source's video."""
    s = plan.spec.model_dump(mode="json")
    header = [] if plan.spec.options.remux else [
        tasks.encode_chunk.si(spec=s, index=c.index).set(queue=plan.queue) for c in plan.chunks]
    header.append(tasks.encode_audio.si(spec=s))
    return chord(header, tasks.concat.s(spec=s))
