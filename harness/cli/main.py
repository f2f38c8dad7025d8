"""Entry point of the `hilt` CLI: registers the subcommands and maps HiltError to exit 2."""

from __future__ import annotations

import logging
import sys

import typer
from typer._click.exceptions import ClickException

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


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; any HiltError becomes one red line on stderr and exit code 2."""
    _register()
    try:
        rc = app(args=argv, standalone_mode=False)  # click returns a typer.Exit's code here
        if isinstance(rc, int):
            return rc
    except HiltError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("[red]aborted[/red]")
        return 130
    except ClickException as exc:  # usage errors carry their own exit code
        exc.show()
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
