"""Canvases are data: pure functions from a spec to the Celery signatures of one phase.

A job runs in two phases that the job service dispatches: ``analyse`` (probe, plan) and, once the
plan is known (and approved, for a held job), ``encode`` (the chord of chunk encodes and the audio,
then concat, mux, verify, publish). Signatures are built by task name, so this module does not
import the tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import chain, chord
from celery.canvas import Signature

from mediatasks.fingerprint import KnownSource
from mediatasks.models import JobSpec


def _sig(app: Any, name: str, **kwargs: Any) -> Signature:
    return app.signature(f"mediatasks.{name}", kwargs=kwargs)


def cleanup(app: Any, spec: JobSpec, *, remove: bool = False) -> Signature:
    """The errback of every phase (``remove``: the whole job directory goes, as for a rejected
    job)."""
    kwargs: dict[str, Any] = {"job_id": spec.job_id, "attempt": spec.attempt}
    if remove:
        kwargs["remove"] = True
    return app.signature("mediatasks.cleanup", kwargs=kwargs, immutable=True)


def analyse_workflow(app: Any, spec: JobSpec, *, known: KnownSource | None = None) -> Signature:
    """probe -> plan; the plan step hands the job back to the service. ``known``: the source as
    the submitter probed it, which the probe step takes while the file still matches."""
    s = spec.model_dump(mode="json")
    probe = (_sig(app, "probe", spec=s, known=known.model_dump(mode="json")) if known is not None
             else _sig(app, "probe", spec=s))
    wf = chain(probe.set(immutable=True), _sig(app, "plan", spec=s))
    wf.link_error(cleanup(app, spec))
    return wf


def encode_workflow(app: Any, spec: JobSpec, *, chunks: int, queue: str,
                    order: Sequence[int] | None = None) -> Signature:
    """[encode_chunk x chunks on ``queue``, encode_audio on io] -> concat -> mux -> verify ->
    publish. A remux encodes nothing: the audio task alone, then concat hands on the source.
    ``order``: the chunk indices in the order they are sent (longest first); else by index."""
    s = spec.model_dump(mode="json")
    indices = list(order) if order is not None and sorted(order) == list(range(chunks)) \
        else list(range(chunks))
    header = [] if spec.options.remux else [
        _sig(app, "encode_chunk", spec=s, index=i).set(queue=queue, immutable=True)
        for i in indices]
    header.append(_sig(app, "encode_audio", spec=s).set(immutable=True))
    wf = chain(chord(header, _sig(app, "concat", spec=s)), _sig(app, "mux", spec=s),
               _sig(app, "verify", spec=s), _sig(app, "publish", spec=s))
    wf.link_error(cleanup(app, spec))
    return wf
