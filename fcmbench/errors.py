"""One exception type for every user-facing failure: the CLI prints its message and exits with 2."""


class FcmbenchError(Exception):
    """A bad input or environment, explained in words a user can act on."""
