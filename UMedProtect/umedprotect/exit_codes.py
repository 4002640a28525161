"""Exit codes of the ``umedprotect`` command, for every script that runs protection (importable without torch)."""

EXIT_OK = 0
EXIT_FAILURE = 1  # unexpected failure
EXIT_BAD_INPUT = 2  # missing, unreadable or inconsistent files, bad options
EXIT_DISCREPANCIES = 3  # verify found discrepancies
EXIT_INTERRUPTED = 130  # Ctrl-C, or cancelled
