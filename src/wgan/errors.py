"""The one exception type for mistakes a user can make (bad flags, bad files)."""


class WganError(Exception):
    """An error caused by the user's input; the CLI prints its message on one line and exits 1."""
