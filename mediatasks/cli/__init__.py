"""The command line: options in, the job service called, results out. Errors become one line and
an exit code here, and only here."""

from __future__ import annotations

import logging
import sys
from typing import Any

import typer

from mediatasks.cli import jobs, keys, local, manage, webhooks
from mediatasks.cli.common import err, quiet_libraries
from mediatasks.errors import MediatasksError

cli = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Frame-exact chunked video transcoding on a Celery cluster.")
jobs_cli = typer.Typer(no_args_is_help=True, help="The job history.")
cli.add_typer(jobs_cli, name="jobs")
webhooks_cli = typer.Typer(no_args_is_help=True, help="Webhook deliveries: list, replay.")
cli.add_typer(webhooks_cli, name="webhooks")
keys_cli = typer.Typer(no_args_is_help=True, help="The HTTP API's keys.")
cli.add_typer(keys_cli, name="keys")



def _add(group: typer.Typer, fn: Any, name: str | None = None, **kwargs: Any) -> None:
    """Register a command; its docstring becomes its help as flowing sentences (a docstring's line
    breaks would otherwise break the help mid-sentence)."""
    group.command(name, help=" ".join((fn.__doc__ or "").split()), **kwargs)(fn)


for _fn in (local.run, jobs.plan, jobs.probe, jobs.submit, manage.status, manage.events,
            manage.cancel, manage.retry, manage.approve, manage.reject, manage.undo,
            manage.gc):
    _add(cli, _fn)
_add(cli, manage.worker, context_settings={"allow_extra_args": True,
                                           "ignore_unknown_options": True})
_add(jobs_cli, manage.jobs_list, "list")
_add(jobs_cli, manage.jobs_show, "show")
_add(webhooks_cli, webhooks.webhooks_list, "list")
_add(webhooks_cli, webhooks.webhooks_replay, "replay")
_add(cli, keys.api)
_add(keys_cli, keys.keys_create, "create")
_add(keys_cli, keys.keys_list, "list")
_add(keys_cli, keys.keys_revoke, "revoke")


def main() -> None:
    """Entry point: turn every error into one line on stderr and an exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    try:
        rc = cli(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except MediatasksError as exc:
        err.print(f"mediatasks: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("mediatasks: interrupted", markup=False)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, EOFError):
        sys.exit(130)
    except Exception as exc:  # usage errors and anything unexpected: still one line
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click's (typer's)
            err.print(f"mediatasks: error: {' '.join(exc.format_message().split())}",
                      markup=False, highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        err.print(f"mediatasks: internal error: {type(exc).__name__}: {exc}", markup=False,
                  highlight=False, soft_wrap=True)
        sys.exit(70)
