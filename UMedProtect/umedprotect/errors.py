"""Errors the user can act on."""

from __future__ import annotations


class InputError(Exception):
    """Bad user input. The CLI prints it as one line and exits with code 2.

    ``option`` names the setting at fault (a key of ``settings.OPTIONS``, or another option's
    name such as ``"overwrite"``) so that each front end can word it in its own terms.
    """

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option

    def __reduce__(self):  # keep ``option`` across processes (protect-dataset --workers)
        return type(self), (str(self), self.option)


class Cancelled(Exception):
    """The user cancelled a long operation."""
