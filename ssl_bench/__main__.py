"""``python -m ssl_bench ...`` is ``ssl-bench ...`` (and ``torchrun --nproc_per_node=N -m ssl_bench run ...``)."""

import sys

from ssl_bench.cli import main

sys.exit(main())
