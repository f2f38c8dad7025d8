"""Entry point of the `hilt` CLI: registers the subcommands and maps HiltError to exit 2."""

from __future__ import annotations

import logging
import sys

import typer
from rich.markup import escape
from typer._click.exceptions import ClickException, UsageError

from harness.cli.common import err_console
from harness.errors import HiltError
from harness.versions import stack_versions

app = typer.Typer(
    name="hilt",
    help="Hardware-in-the-loop tuner: cascade-prune LLMs and measure them on edge boards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        for name, version in stack_versions().items():
            typer.echo(f"{name} {version}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print versions and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at debug level."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _register() -> None:
    """Attach each subcommand module."""
    from harness.cli import registry

    registry.register(app)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error(message: str) -> int:
    """One red line on stderr, exit code 2: how every user-facing failure ends."""
    err_console.print(f"[red]error:[/red] {escape(_one_line(message))}", highlight=False, soft_wrap=True)
    return 2


def _os_error(exc: OSError) -> str:
    """'Permission denied: /path' rather than '[Errno 13] Permission denied: '/path''."""
    if exc.strerror and exc.filename is not None:
        where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
        return f"{exc.strerror}: {where}"
    return str(exc) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a HiltError, a usage error or an OSError becomes one red line and exit code 2."""
    _register()
    try:
        rc = app(args=argv, prog_name="hilt", standalone_mode=False)  # returns a typer.Exit's code
        if isinstance(rc, int):
            return rc
    except HiltError as exc:
        return _error(str(exc))
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("[red]aborted[/red]")
        return 130
    except UsageError as exc:  # unknown option, bad value, missing option: name the command and the fault
        where = exc.ctx.command_path if exc.ctx is not None else "hilt"
        return _error(f"{where}: {exc.format_message()} (see {where} --help)")
    except ClickException as exc:
        return _error(exc.format_message())
    except OSError as exc:  # permission denied, is a directory, no such file: the user's input, not a bug
        return _error(_os_error(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
