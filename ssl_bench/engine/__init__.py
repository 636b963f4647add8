"""The engine: a strategy trains a method through a stream's experiences; evaluators measure each phase.

``execute(config, registry)`` resolves the run's plugins once into a plan (:mod:`ssl_bench.plan`), builds
the run from it, trains it phase by phase (checkpointing after each, so a crashed run resumes), evaluates
the frozen backbone after every phase and writes one result file. One job per module, in the order the
data flows:

- :mod:`.build`: the :class:`~.build.Run` built from a plan (dataset and stream via :func:`load_data`,
  backbone, method, strategy, evaluators, phases, optimiser); :mod:`.composite`: ``a+b`` strategies;
  :mod:`.optim`: optimisers and learning-rate schedules; :mod:`.distributed`: torchrun;
- :mod:`.loop`: :func:`execute`, the loop over phases, and ``train_phase``, the loop over steps;
- :mod:`.evaluation`: frozen-backbone features and the evaluators (also on saved weights: ``ssl-bench eval``);
- :mod:`.checkpoint`: checkpoint after every phase, resume, the lock;
- :mod:`.record`: the result file (and :func:`check_writable`, before any training); :mod:`.weights`: the
  backbone's weights saved next to it; :mod:`.tracking`: ``--log`` observers;
- :mod:`.launch`: many runs (``ssl-bench sweep``) through a process pool or submitit.
"""

from ssl_bench.engine.build import load_data
from ssl_bench.engine.loop import execute
from ssl_bench.engine.record import check_writable
from ssl_bench.plan import RunConfig, make_plan

__all__ = ["RunConfig", "check_writable", "execute", "load_data", "make_plan"]
