"""Errors a user can fix. The CLI prints them as one line and exits with status 2."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class UserError(Exception):
    """Something in the user's input is wrong; the message says what and what is allowed."""


class RunFailed(Exception):
    """A run started but could not finish (exit status 1)."""
