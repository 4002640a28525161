"""The ``umedprotect`` command: one module per subcommand (``add_parser`` + ``run``)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import entry_points

from .. import __version__
from ..errors import Cancelled, InputError
from ..exit_codes import EXIT_BAD_INPUT, EXIT_DISCREPANCIES, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK
from ..settings import OPTIONS

SUBCOMMANDS = ("protect", "protect_dataset", "verify", "fit")  # modules in this package, in help order
# A subcommand module has ``add_parser(subparsers)`` and ``run(args)``, imports heavy libraries only in
# them, and may declare a one-line ``SUMMARY``: then its parser is built only when that command runs.
PLUGIN_GROUP = "umedprotect.commands"  # entry points of installed add-ons (the evaluation side's ``evaluate``)
HINT_OPTIONS = ("overwrite", "allow_empty", "resample_mask", "source", "test_dir")  # worded "... (use --flag)"

EPILOG = f"""\
exit codes:
  {EXIT_OK:<5d}success
  {EXIT_FAILURE:<5d}unexpected failure (one-line message; add --debug for the traceback)
  {EXIT_BAD_INPUT:<5d}bad input: missing, unreadable or inconsistent files, bad options (one-line message)
  {EXIT_DISCREPANCIES:<5d}verify found discrepancies
  {EXIT_INTERRUPTED:<5d}interrupted (Ctrl-C)

Outputs are written to a temporary name and renamed into place, so a file under its final name
is always complete. Inputs are never modified. Protector files are safetensors + JSON; files
that could run code (pickle) are refused.
Run 'umedprotect COMMAND --help' for the options of each command."""


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line on stderr with exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``umedprotect`` parser: every subcommand in full, or for a command line ``argv`` only the one it names.

    For ``argv`` the other subcommands are listed by their one-line ``SUMMARY`` only, so ``--help`` and
    option errors answer without importing what the other commands need (torch, ...); a command of
    this package runs without looking up the installed add-ons' commands at all.
    """
    command = None if argv is None else chosen_command(argv)
    builtin = command in {name.replace("_", "-") for name in SUBCOMMANDS}
    parser = OneLineParser(
        prog="umedprotect",
        description=(
            "Protect medical image segmentation data against unauthorized AI training with small, "
            "invisible contour- and texture-aware perturbations (UMed). Labels are never modified."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"umedprotect {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of unexpected errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in command_modules(plugins=not builtin):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # an optional dependency of that command is missing
            _add_unavailable(subparsers, name, exc.name or str(exc))
            continue
        summary = getattr(module, "SUMMARY", None)
        if argv is None or name == command or summary is None:
            module.add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=summary, add_help=False)  # listed; never parsed
    return parser


def command_modules(plugins: bool = True) -> list[tuple[str, str]]:
    """(command, module) of every subcommand, in help order: this package's, then (``plugins``) the add-ons'.

    Looking up the add-ons' entry points reads every installed package's metadata (a fifth of a second).
    """
    modules = [(name.replace("_", "-"), f"{__name__}.{name}") for name in SUBCOMMANDS]
    return modules + ([(ep.name, ep.value) for ep in entry_points(group=PLUGIN_GROUP)] if plugins else [])


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named on a command line: its first word that is not an option (global options take no value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _add_unavailable(subparsers: argparse._SubParsersAction, command: str, missing: str) -> None:
    """A placeholder for a command whose optional dependencies are not installed."""
    message = (
        f"'{command}' needs the Python package '{missing}', which is not installed (see the README's install section)"
    )
    parser = subparsers.add_parser(command, help=f"(unavailable: needs {missing})", description=message, add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def run(args: argparse.Namespace) -> int:
        raise InputError(message)

    parser.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (see ``EPILOG``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and argument errors
        return int(exc.code or 0)
    _configure_logging()
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        _fail(f"error: {option_message(exc)}")
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, Cancelled):
        _fail("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place that turns crashes into exit code 1
        if args.debug:
            traceback.print_exc()
        _fail(f"unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)")
        return EXIT_FAILURE


def option_message(error: InputError) -> str:
    """An input error in command-line terms.

    An option at fault puts its flag in front (``--epsilon 99 is out of range ...``); an option that
    is the remedy (:data:`HINT_OPTIONS`) is suggested after the message (``... exists (use --overwrite)``).
    """
    return with_option(str(error), error.option)


def with_option(message: str, option: str | None) -> str:
    """``message`` with the flag of ``option`` (a settings name) in front of it, or suggested after it."""
    if not option:
        return message
    if option in HINT_OPTIONS:
        return f"{message} (use {flag(option)})"
    return f"{flag(option)} {message}"


def flag(option: str) -> str:
    """The command-line flag of a settings name: ``band_radius`` -> ``--band-radius``."""
    return OPTIONS[option].flag if option in OPTIONS else f"--{option.replace('_', '-')}"


def add_option(parser: argparse.ArgumentParser, name: str, **overrides) -> None:
    """A command-line option built from the settings table (type, default, choices, help); ``overrides`` win."""
    option = OPTIONS[name]
    arguments = dict(type=option.kind, default=option.default, choices=option.choices, help=option.help)
    parser.add_argument(option.flag, **{**arguments, **overrides})


def _fail(message: str) -> None:
    print(f"umedprotect: {' '.join(str(message).split())}", file=sys.stderr)


def _configure_logging() -> None:
    """Warnings and notes from the backend as ``umedprotect: warning: ...`` lines on stderr."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK prints multi-line warnings; we report our own
    logger = logging.getLogger("umedprotect")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False


class _StderrHandler(logging.Handler):
    """One line per record on the current ``sys.stderr`` (which tests may swap).

    A record logged with ``extra={"option": name}`` is worded as an input error naming that option.
    """

    def emit(self, record: logging.LogRecord) -> None:
        _fail(f"{record.levelname.lower()}: {with_option(record.getMessage(), getattr(record, 'option', None))}")
