"""What the user chose for one run: the protocol, the plugins and their options (:class:`RunConfig`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ssl_bench import results
from ssl_bench.protocol import Protocol


@dataclass
class RunConfig:
    """What the user chose: the protocol plus the plugins and options of one run."""

    protocol: Protocol
    method: str
    stream: str
    strategy: str  #: one name or several joined by "+"
    seed: int
    out: Path
    method_options: dict[str, Any] = field(default_factory=dict)
    strategy_options: dict[str, Any] = field(default_factory=dict)  #: "name.key" or "key" -> value
    stream_options: dict[str, Any] = field(default_factory=dict)  #: over the protocol's [stream.options.<name>]
    data_root: str | None = None
    download: bool = False
    device: str = "auto"
    plugins: list[str] = field(default_factory=list)
    progress: bool = True

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(protocol=self.protocol.model_dump(mode="json"), protocol_hash=self.protocol.hash, out=str(self.out))
        del d["progress"]
        return d

    @property
    def result_path(self) -> Path:
        return self.out / results.result_name(self.protocol.label, self.method, self.stream, self.strategy, self.seed)
