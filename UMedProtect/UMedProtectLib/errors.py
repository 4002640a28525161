"""Errors the user can act on."""


class InputError(Exception):
    """Bad user input. The CLI prints it as one line and exits with code 2."""


class Cancelled(Exception):
    """The user cancelled a long operation."""
