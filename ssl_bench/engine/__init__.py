"""The engine: a strategy trains a method through a stream's experiences; evaluators measure each phase.

``execute(config, registry)`` builds a run from a protocol and the named plugins, trains it
phase by phase (checkpointing after each, so a crashed run resumes), evaluates the frozen
backbone after every phase and writes one result file. One job per module, in the order the
data flows:

- :mod:`.config`: :class:`RunConfig`, what the user chose, and :func:`resolve_recipe`, the effective recipe;
- :mod:`.build`: the :class:`~.build.Run` built from it (dataset and stream via :func:`load_data`,
  backbone, method, strategy, evaluators, phases, optimiser); :mod:`.composite`: ``a+b`` strategies;
- :mod:`.loop`: :func:`execute`, the loop over phases, and ``train_phase``, the loop over steps;
- :mod:`.evaluation`: frozen-backbone features and the evaluators;
- :mod:`.checkpoint`: checkpoint after every phase, resume;
- :mod:`.record`: the result file (and :func:`check_writable`, before any training).
"""

from ssl_bench.engine.build import load_data
from ssl_bench.engine.config import RunConfig, resolve_recipe
from ssl_bench.engine.loop import execute
from ssl_bench.engine.record import check_writable

__all__ = ["RunConfig", "check_writable", "execute", "load_data", "resolve_recipe"]
