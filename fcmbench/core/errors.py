"""One exception type for every user-facing failure: the CLI prints its message and exits with 2."""


class FcmbenchError(Exception):
    """A bad input or environment, explained in words a user can act on."""


class BitstreamError(FcmbenchError):
    """A bitstream that breaks a hard limit or contradicts itself; the message names the field."""
