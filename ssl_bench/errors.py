"""The one exception type that the CLI turns into a one-line message and exit status 2."""

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input the user can fix: the message says what is wrong and how to fix it."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the closest of ``choices``, or a list of what exists."""
    known = sorted(choices)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    if close:
        return f" Did you mean '{close[0]}'?"
    if known:
        return " Available: " + ", ".join(known) + "."
    return ""
