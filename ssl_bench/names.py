"""Names: what a registered plugin name may be, and the file name of a run (a leaf module: it imports nothing
of ssl-bench, so the registry and the result files can both use it)."""

from __future__ import annotations

import re

#: what a registered name may be: it is typed on command lines and printed into file names and leaderboards
#: (result files' names are checked against it too); a strategy's name has no '+', which joins strategies
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


def result_name(
    protocol_label: str,
    method: str,
    stream: str,
    strategy: str,
    seed: int,
    variant: str | None = None,
    precision: str | None = None,
) -> str:
    """The file name of a run: the same run always gets the same name (so a crashed run can resume).

    A run with anything on top of the defaults (``--recipe``, ``--method-opt``, strategy or stream
    options, a ``--precision`` other than the protocol's) carries its identity hash as ``__v<hash>``, so
    variants never overwrite each other; a run of another precision also ends in ``__<precision>``.
    """
    safe = lambda s: "".join(c if c.isalnum() or c in "-_.+" else "_" for c in s)  # noqa: E731
    tail = (f"__v{safe(variant)}" if variant else "") + (f"__{safe(precision)}" if precision else "")
    return f"{safe(protocol_label)}__{safe(method)}__{safe(stream)}__{safe(strategy)}__s{seed}{tail}.h5"
