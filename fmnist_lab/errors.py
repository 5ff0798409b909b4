"""The one exception type the course raises for bad input, so the CLI can print it as one line."""


class FmnistLabError(Exception):
    """A problem the user can fix: the message says what is wrong and how to fix it."""
