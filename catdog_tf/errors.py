"""The errors a user can fix: entry points print them as one line, with no traceback."""


class UserError(ValueError):
    """Bad input or misuse: the message names the file (or flag) and what to do."""
