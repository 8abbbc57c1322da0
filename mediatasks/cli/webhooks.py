"""`webhooks list` and `webhooks replay`: what was sent to a job's webhook URL, and sending one
message again."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from mediatasks.cli.common import JobArg, JsonOpt, err, out
from mediatasks.settings import get_settings

DeliveryArg = Annotated[str, typer.Argument(help="The delivery (message) id, msg_….",
                                            show_default=False)]


def webhooks_service() -> Any:
    """The webhooks over the job history, sending through the shared cluster."""
    from mediatasks.cluster.app import app
    from mediatasks.cluster.services import webhooks_for

    return webhooks_for(app, get_settings().database_url)


def _as_json(delivery: Any) -> str:
    data = delivery.model_dump(mode="json")
    data["payload"] = json.loads(delivery.payload)
    return json.dumps(data)


def _line(delivery: Any) -> str:
    text = f"{delivery.id}  {delivery.type:<21}  {delivery.status:<9}  {delivery.attempts} attempt(s)"
    if delivery.history:
        last = delivery.history[-1]
        said = str(last.status_code) if last.outcome == "delivered" else (last.error or last.outcome)
        text += f"  last: {said}, {last.latency_ms:.0f} ms"
    if delivery.status == "pending" and delivery.next_attempt_at is not None and delivery.attempts:
        text += f"  next: {delivery.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC"
    return text


def webhooks_list(job_id: JobArg, as_json: JsonOpt = False) -> None:
    """The webhook messages of a job (or batch): type, status, attempts, and the last answer
    (status code or error) with its latency. --json: one delivery a line, every attempt in
    'history'."""
    found = webhooks_service().deliveries(job_id)
    if not found and not as_json:
        err.print(f"{job_id}: no webhook messages (was it submitted with --webhook-url?)",
                  markup=False, highlight=False)
    for delivery in found:
        if as_json:
            print(_as_json(delivery))
        else:
            out.print(_line(delivery), markup=False, highlight=False)


def webhooks_replay(delivery_id: DeliveryArg, as_json: JsonOpt = False) -> None:
    """Send a webhook message again, with the same id (receivers deduplicate on it); its new
    attempts are appended to the delivery. Needs the shared cluster (MEDIATASKS_BROKER_URL)."""
    delivery = webhooks_service().replay(delivery_id)
    if as_json:
        print(_as_json(delivery))
    else:
        out.print(f"{delivery.id}: {delivery.type} sent again to {delivery.url}", markup=False,
                  highlight=False)


def subscribe(keys: list[str], url: str) -> None:
    """Send the webhooks of these jobs (and batch) to ``url``, signed with
    MEDIATASKS_WEBHOOK_SECRET; called before they are submitted."""
    hooks = webhooks_service()
    secret = get_settings().webhook_secret or ""
    for key in keys:
        hooks.subscribe(key, url, secret)
