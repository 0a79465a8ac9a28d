"""Errors a command reports to the user and the exit codes they map to."""

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3


class CliError(Exception):
    """A failure worth one clear line to the user; exits with ``EXIT_ERROR``."""


class UsageError(Exception):
    """The command line is wrong (unknown option, missing argument); exits with ``EXIT_USAGE``."""
