"""Webhook deliveries over HTTP: what was sent for a job or batch, and sending one again."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request

from mediatasks.api.auth import ReadKey, SubmitKey, context
from mediatasks.service.webhook_messages import Delivery

router = APIRouter(tags=["webhooks"])


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    """A delivery with its payload as JSON and every attempt under ``history``."""
    data = delivery.model_dump(mode="json")
    data["payload"] = json.loads(delivery.payload)
    return data


@router.get("/v1/jobs/{job_id}/webhooks",
            summary="The webhook messages of a job (or batch), each with its attempts")
def list_deliveries(job_id: str, request: Request, _: ReadKey) -> dict[str, Any]:
    found = context(request).webhooks.deliveries(job_id)
    return {"deliveries": [delivery_json(d) for d in found]}


@router.post("/v1/webhooks/{delivery_id}/replay", status_code=202,
             summary="Send a webhook message again (same id; its attempts are appended)")
def replay_delivery(delivery_id: str, request: Request, _: SubmitKey) -> dict[str, Any]:
    return delivery_json(context(request).webhooks.replay(delivery_id))
