"""Several strategies applied together (``--strategy replay+mas``): :class:`Composite`."""

from __future__ import annotations

from typing import Any

import torch

from ssl_bench.api import Batch, Experience, Phase, RunContext, Strategy
from ssl_bench.errors import UserError


class Composite(Strategy):
    """Several strategies applied together (``--strategy replay+mas``), in the order given.

    At most one of them may plan the phases; every other hook calls each part in turn (batches
    and views are passed through the parts, extra losses added up).
    """

    def __init__(self, parts: list[Strategy]):
        self.parts = parts
        self.name = "+".join(p.name for p in parts)

    def plan(self, experiences: list[Experience], steps: list[int]) -> list[Phase] | None:
        plans = [(p.name, p.plan(experiences, steps)) for p in self.parts]
        plans = [(n, pl) for n, pl in plans if pl is not None]
        if len(plans) > 1:
            raise UserError(
                f"strategies {' and '.join(n for n, _ in plans)} both plan the phases; combine at most one of them with others"
            )
        return plans[0][1] if plans else None

    def setup(self, run: RunContext) -> None:
        for p in self.parts:
            p.setup(run)

    def before_phase(self, run: RunContext, phase: Phase) -> None:
        for p in self.parts:
            p.before_phase(run, phase)

    def batch(self, run: RunContext, batch: Batch) -> Batch:
        for p in self.parts:
            batch = p.batch(run, batch)
        return batch

    def views(self, run: RunContext, views: list[torch.Tensor], batch: Batch) -> list[torch.Tensor]:
        for p in self.parts:
            views = p.views(run, views, batch)
        return views

    def loss(self, run: RunContext, views: list[torch.Tensor], batch: Batch) -> torch.Tensor | None:
        terms = [t for t in (p.loss(run, views, batch) for p in self.parts) if t is not None]
        return sum(terms) if terms else None

    def after_backward(self, run: RunContext) -> None:
        for p in self.parts:
            p.after_backward(run)

    def after_phase(self, run: RunContext, phase: Phase) -> None:
        for p in self.parts:
            p.after_phase(run, phase)

    def record(self) -> dict[str, Any]:
        out = {}
        for p in self.parts:
            out.update({f"{p.name}/{k}": v for k, v in p.record().items()})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {p.name: p.state_dict() for p in self.parts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for p in self.parts:
            p.load_state_dict(state.get(p.name, {}))
