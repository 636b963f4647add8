"""SimCLR: contrastive learning of visual representations with the NT-Xent loss.

Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, ICML 2020.
Defaults from the paper: a 2-layer MLP projector with a 128-d output and temperature 0.5
(the paper's best for batch sizes up to 1024 with SGD/LARS; 0.1-0.2 for very large batches).
"""

from ssl_bench import hookimpl
from ssl_bench.api import Method
from ssl_bench.blocks.heads import mlp
from ssl_bench.errors import UserError
from ssl_bench.ops import nt_xent

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, ICML 2020"


class SimCLR(Method):
    #: smoke: plain SGD as the smoke protocol always ran it; cpu: LARS (solo-learn's cifar/simclr.yaml: lr 0.4, wd 1e-4,
    #: eta 0.02 with clipping, temperature 0.2) with the head scaled to the x0.25 backbone; s3l: solo-learn's, head 2048 -> 256
    recipes = {
        "smoke": {"extends": "sgd-smoke"},
        "cpu": {
            "extends": ["solo-lars-cifar", "cpu-phase"],
            "lr": 0.4,
            "options": {"temperature": 0.2, "proj_hidden": 512, "proj_dim": 128},
        },
        "s3l": {
            "extends": ["solo-lars-cifar", "s3l-phase"],
            "lr": 0.4,
            "options": {"temperature": 0.2, "proj_hidden": 2048, "proj_dim": 256},
        },
    }
    distillation = "contrastive"  # CaSSLe's distiller for this kind of method (ssl_bench.blocks.distill)

    def __init__(self, backbone, proj_hidden: int = 512, proj_dim: int = 128, temperature: float = 0.5):
        if temperature <= 0 or proj_hidden < 1 or proj_dim < 1:
            raise UserError(f"simclr: need temperature > 0 and positive head sizes, got {temperature}, {proj_hidden}, {proj_dim}")
        super().__init__(backbone)
        self.temperature = temperature
        self.projector = mlp(self.feature_dim, proj_hidden, proj_dim)

    def loss(self, views, labels):
        z1, z2 = (self.projector(self.backbone(v)) for v in views)
        return nt_xent(z1, z2, self.temperature)


@hookimpl
def ssl_bench_methods():
    return {"simclr": SimCLR}
