"""User-facing errors: the command lines print these as one line and exit with status 2."""


class HemaError(Exception):
    """A mistake in the user's input or environment, reported without a traceback."""

    exit_code = 2
