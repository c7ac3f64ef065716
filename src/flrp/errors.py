"""One exception type for every user-facing error: the CLI prints it as one line."""

__all__ = ["FlrpError"]


class FlrpError(Exception):
    """A problem with user input (a file, key, flag or value), reported as one line."""
