"""Result files: the contract (:mod:`.file`: layout, atomic writing, lazy reading within limits; :mod:`.checks`:
what a file must be to count) and everything that reads result files: summaries (:mod:`.continual`),
leaderboard tables (:mod:`.tables`), figures (:mod:`.figures`), the findings report (:mod:`.claims`),
submission (:mod:`.submission`), re-runs (:mod:`.reproduce`) and the long table (:mod:`.rows`).

The contract's names are re-exported here: ``from ssl_bench import results; results.Result(path)``.
"""

from ssl_bench.names import result_name
from ssl_bench.results.checks import check, crashing
from ssl_bench.results.file import (
    HASH_ATTR,
    IDENTITY,
    MAX_DATASET_BYTES,
    MAX_TOTAL_BYTES,
    REQUIRED_ATTRS,
    SCHEMA_VERSION,
    TOLERANCE,
    Result,
    content_hash,
    write,
)

__all__ = [
    "HASH_ATTR",
    "IDENTITY",
    "MAX_DATASET_BYTES",
    "MAX_TOTAL_BYTES",
    "REQUIRED_ATTRS",
    "SCHEMA_VERSION",
    "TOLERANCE",
    "Result",
    "check",
    "content_hash",
    "crashing",
    "result_name",
    "write",
]
