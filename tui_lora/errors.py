"""Errors a user can fix. The CLI prints them as one line and exits with status 2."""


class UserError(Exception):
    """Something in the user's input is wrong; the message says what and what is allowed."""


class RunFailed(Exception):
    """A run started but could not finish (exit status 1)."""
