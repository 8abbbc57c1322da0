"""What every command shares: the consoles, the option types, the job service it talks to."""

from __future__ import annotations

import logging
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console

from mediatasks.errors import InvalidOptions
from mediatasks.settings import get_settings

if TYPE_CHECKING:
    from mediatasks.service import JobService

err = Console(stderr=True, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)
log = logging.getLogger("mediatasks")

InputArg = Annotated[Path, typer.Argument(help="The source video.", show_default=False,
                                          readable=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (one object a line).")]
CodecOpt = Annotated[str, typer.Option("--video-codec", help="Any ffmpeg video encoder.")]
CrfOpt = Annotated[float | None, typer.Option("--crf", help="Constant quality.")]
PresetOpt = Annotated[str | None, typer.Option("--preset", help="Encoder preset.")]
VideoOpt = Annotated[list[str] | None, typer.Option(
    "--video-opt", help="KEY=VALUE passed to the encoder (repeatable).")]
AudioOpt = Annotated[str, typer.Option("--audio-codec",
                                       help="'copy' or an ffmpeg audio encoder.")]
ChunkOpt = Annotated[float | None, typer.Option("--chunk-seconds", min=0.1,
                                                help="Target chunk length.")]
OutputOpt = Annotated[Path | None, typer.Option("-o", "--output", help="The output file.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
HoldOpt = Annotated[bool, typer.Option(
    "--hold", help="Probe and plan, then wait for 'mediatasks approve' (or reject).")]
StrictOpt = Annotated[bool, typer.Option(
    "--strict", help="Refuse a source that is not whole (cut short, frames missing) instead of "
                     "warning.")]
SourcesArg = Annotated[list[Path], typer.Argument(
    help="The source video; with --policy, any number of files and directories (walked for "
         "media files).", show_default=False, readable=False)]
PolicyOpt = Annotated[Path | None, typer.Option(
    "--policy", help="A YAML policy (docs/policies.md): decide per file, file into the library.",
    readable=False)]
OutputDirOpt = Annotated[Path | None, typer.Option(
    "--output-dir", help="With a policy that has no library section: where outputs go.")]
OnErrorOpt = Annotated[str, typer.Option(
    "--on-error", help="continue: a broken file fails alone; stop: it stops the batch.")]
JobArg = Annotated[str, typer.Argument(help="The job id, or a batch id.", show_default=False)]


def single(sources: list[Path]) -> Path:
    if len(sources) != 1:
        raise InvalidOptions(f"{len(sources)} sources given without --policy",
                             hint="give one SOURCE, or several with --policy")
    return sources[0]


def one_source(sources: list[Path], output: Path | None) -> tuple[Path, Path]:
    single(sources)
    if output is None:
        raise InvalidOptions("no output given", path=sources[0],
                             hint="pass -o OUTPUT, or --policy FILE to file it into a library")
    return sources[0], output


def on_error_choice(value: str) -> Literal["continue", "stop"]:
    if value not in {"continue", "stop"}:
        raise InvalidOptions(f"--on-error '{value}' is not continue or stop",
                             hint="pass --on-error continue or --on-error stop")
    return "stop" if value == "stop" else "continue"


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    """A `kill` stops a run as Ctrl-C does: workers stopped, temp files removed."""
    raise KeyboardInterrupt


def quiet_libraries() -> None:
    """kombu and redis-py log every reconnection attempt; the CLI says it once, as an error."""
    for name in ("kombu", "celery", "amqp", "redis"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def shared_service() -> JobService:
    """The service over the shared cluster (MEDIATASKS_BROKER_URL) and the job history."""
    from mediatasks.cluster.app import app
    from mediatasks.cluster.services import service_for

    return service_for(app, get_settings().database_url)


def history_service() -> JobService:
    """The service over the job history alone: reading jobs and events needs no broker."""
    from mediatasks.cluster.services import open_history
    from mediatasks.service import JobService

    history = open_history(get_settings().database_url)
    return JobService(history, where=f"the history at {history.url}", library_log=history)


def local_service(broker_url: str) -> JobService:
    """The service over a private cluster's broker (and the same job history)."""
    from mediatasks.cluster.app import app

    app.conf.update(broker_url=broker_url, result_backend=broker_url)
    return shared_service()
