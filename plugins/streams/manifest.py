"""User-defined stream: the experiences listed in a manifest file (option ``path``).

The file format is described in :mod:`ssl_bench.blocks.splits`; ``ssl-bench stream-export``
writes one for any stream. The manifest fixes the number of experiences: when the
protocol's ``n_experiences`` differs, the manifest wins and a warning says so.
"""

import logging

from ssl_bench import hookimpl
from ssl_bench.blocks import splits as manifest
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = None

log = logging.getLogger(__name__)


def manifest_stream(dataset, n_experiences, seed, path=None):
    """The experiences of the manifest at ``path`` (the seed is not used: the split is fixed by the file)."""
    if not path:
        raise UserError("manifest stream: give the manifest file with --stream-opt path=FILE.json (or .toml)")
    experiences = manifest.experiences(dataset, manifest.read(path), where=f"manifest {path}")
    if len(experiences) != n_experiences:
        log.warning(
            "manifest %s lists %d experiences; the protocol's n_experiences=%d is not used", path, len(experiences), n_experiences
        )
    return experiences


@hookimpl
def ssl_bench_streams():
    return {"manifest": manifest_stream}
