"""An emulated GPU on the CPU: count the host-device synchronisations and copies that a training step would make on
a GPU (issue 35), without one.

A :class:`DeviceTensor` says it lives on a device that is not the host and holds real data on the CPU, so code
takes its device branches with real numbers and real control flow. :class:`EmulatedDevice`, a dispatch mode, runs
every operator on the CPU data, makes the tensors asked for on the device (``torch.zeros(n, device=x.device)``)
DeviceTensors, and records what would make the host wait for the GPU, or a copy wait for the host:

* ``read``: a device value read on the host (``.item()``, ``bool()``, ``int()``, ``float()``, ``.tolist()``,
  ``.cpu()``): the host waits until the GPU has computed it;
* ``shape``: an operator whose output size depends on the data (``nonzero``, boolean-mask indexing,
  ``masked_select``, ``unique``, ``bincount``, ...): its CUDA kernel copies a count to the host;
* ``copy``: a host tensor copied to the device from pageable memory (``torch.tensor(...).to(device)``, and
  ``non_blocking=True`` of an unpinned tensor, which CUDA may stage synchronously), or a host tensor (not a 0-d
  scalar) handed to a device operator;
* ``async``: a ``non_blocking`` copy from pinned memory: allowed, nothing waits.

The device is PyTorch's ``meta`` device type: the one non-CPU device whose device guard and autograd stream
bookkeeping need no driver (a tensor that said ``cuda`` makes autograd ask the CUDA runtime for its stream). So
code must pick its GPU branch by "not on the CPU" (as ``ssl_bench.blocks.augment`` does), and branches written
for ``device.type == "cuda"`` alone are not exercised: the compiled ops' choice between their CUDA kernels and
the references (the references run here), and ``Run``'s placement of data and prefetching (:func:`to_device`
does what the engine does when the training data fit on the GPU). It is a model: it knows the operators above,
not what a kernel does inside; the real GPU is checked with ``torch.cuda.set_sync_debug_mode("error")``
(benchmark/gpu_lease.sh). :meth:`EmulatedDevice.steps` sorts what happens during ``train_phase`` by optimiser
step, keeping the loop's designed copy of the losses (``loop._flush``, every ``LOG_EVERY`` steps and at the
phase's end) apart.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

DEVICE = torch.device("meta")
CPU = torch.device("cpu")
_ROOT = Path(__file__).resolve().parent.parent
aten = torch.ops.aten

#: operators whose output size depends on the data: on CUDA a count goes to the host first
DATA_DEPENDENT = {
    aten.nonzero.default,
    aten.masked_select.default,
    aten._unique.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
    aten.bincount.default,
    aten.histc.default,
    aten.repeat_interleave.Tensor,
    aten.masked_scatter.default,
    aten.equal.default,
}
#: indexing operators: with a boolean mask they are data-dependent too
INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}


class DeviceTensor(torch.Tensor):
    """A tensor on the emulated device whose data (``elem``) live on the CPU."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        out = torch.Tensor._make_wrapper_subclass(
            cls,
            elem.shape,
            strides=elem.stride(),
            storage_offset=elem.storage_offset(),
            dtype=elem.dtype,
            layout=elem.layout,
            device=DEVICE,
        )
        out.elem = elem
        return out

    def __repr__(self) -> str:
        return f"DeviceTensor({self.elem!r})"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.tolist:  # refused for tensor subclasses: a read of the data
            _record("read", "tolist")
            with _no_modes():
                return args[0].elem.tolist()
        if func is torch.Tensor.new_tensor:  # made on the host, then copied (it would make a bare meta tensor)
            _record("copy", "new_tensor")
            with _no_modes():
                return DeviceTensor(args[0].elem.new_tensor(*args[1:], **{**(kwargs or {}), "device": CPU}))
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # outside the mode: run, record nothing
        return _run(func, args, kwargs or {}, None)


@dataclass
class Event:
    kind: str  #: read, shape, copy or async
    op: str
    where: str  #: the innermost line of ssl-bench's code (not the tests') that asked for it

    def __str__(self) -> str:
        return f"{self.kind}: {self.op} at {self.where}"


@dataclass
class Steps:
    """What each optimiser step of a phase did (``per_step[k]``: step k's events), and the loop's loss copies."""

    per_step: list[list[Event]] = field(default_factory=lambda: [[]])
    flush: list[Event] = field(default_factory=list)

    def waits(self, first: int = 0) -> list[tuple[int, Event]]:
        """(step, event) of every event that makes one side wait, from step ``first`` on."""
        done = self.per_step[:-1]  # the last list is the step after the last one
        return [(k, e) for k, events in enumerate(done) if k >= first for e in events if e.kind != "async"]


_active: list[EmulatedDevice] = []  # the modes in use (Python-level helpers record into the innermost)


def _record(kind: str, op: str) -> None:
    if _active:
        _active[-1].record(kind, op)


@contextlib.contextmanager
def _no_modes() -> Iterator[None]:
    with _disable_current_modes(), torch._C.DisableTorchFunction():
        yield


def _where() -> str:
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename).resolve()
        if path.is_relative_to(_ROOT) and len(path.parts) > len(_ROOT.parts) + 1:
            if path.parts[len(_ROOT.parts)] in ("ssl_bench", "plugins"):
                return f"{path.relative_to(_ROOT)}:{frame.lineno}"
    return "?"


def _on_device(device: Any) -> bool:
    return device is not None and torch.device(device).type == DEVICE.type


def _run(func, args, kwargs, mode: EmulatedDevice | None):
    """``func`` on the CPU data, its tensor outputs made DeviceTensors when it ran on the device; ``mode`` records."""
    wrappers: dict[int, DeviceTensor] = {}
    host: list[torch.Tensor] = []  # host tensors (not 0-d scalars) among the inputs

    def unwrap(x):
        if isinstance(x, DeviceTensor):
            wrappers[id(x.elem)] = x
            return x.elem
        if isinstance(x, torch.Tensor) and x.is_meta:
            raise RuntimeError(f"emulated device: {func} got a bare meta tensor (no data): a way of making tensors to add")
        if isinstance(x, torch.Tensor) and x.dim() > 0:
            host.append(x)
        return x

    def record(kind: str, op: str) -> None:
        if mode is not None:
            mode.record(kind, op)

    def pinned(t: torch.Tensor) -> bool:
        return mode is not None and mode.is_pinned(t)

    a, k = _map(unwrap, args), {key: _map(unwrap, v) for key, v in kwargs.items()}
    on_device = bool(wrappers)
    if func is aten._to_copy.default:  # .to(): maybe between host and device
        to_device = _on_device(k["device"]) if k.get("device") is not None else on_device
        if to_device and not on_device:
            record("async" if k.get("non_blocking") and pinned(a[0]) else "copy", "to(device)")
        elif on_device and not to_device:
            record("read", "to(cpu)")
        k["device"] = CPU
        out = func(*a, **k)
        return DeviceTensor(out) if to_device else out
    if func is aten.copy_.default:  # dst.copy_(src)
        to_device, from_device = isinstance(args[0], DeviceTensor), isinstance(args[1], DeviceTensor)
        if to_device and not from_device and a[1].dim() > 0:
            blocking = not k.get("non_blocking", a[2] if len(a) > 2 else False)
            record("copy" if blocking or not pinned(a[1]) else "async", "copy_ from the host")
        elif from_device and not to_device:
            record("read", "copy_ to the host")
        func(*a, **k)
        return args[0]
    if func is aten._pin_memory.default:
        out = a[0].clone()
        if mode is not None:
            mode.pinned.append(out)
        return out
    if func is aten.is_pinned.default:
        return pinned(a[0])
    if _on_device(k.get("device")):
        k["device"] = CPU
        on_device = True
    if on_device:
        name = str(func.overloadpacket.__name__)
        if func is aten._local_scalar_dense.default:
            record("read", "item")
        elif func in DATA_DEPENDENT or (
            func in INDEXING and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in a[1] if i is not None)
        ):
            record("shape", name)
        if host:
            record("copy", f"{name} of a host tensor of shape {tuple(host[0].shape)}")
    out = func(*a, **k)
    if not on_device or func is aten._local_scalar_dense.default:
        return out

    def wrap(x):
        if type(x) is not torch.Tensor:
            return x
        same = wrappers.get(id(x))  # an in-place operator returns its input
        return DeviceTensor(x) if same is None else same

    return _map(wrap, out)


def _map(fn, x):
    """``fn`` over the tensors in an operator's arguments or outputs: a value, or a list or tuple of them, at most
    two deep (``torch.ops`` schemas nest no deeper); much faster than pytree's ``tree_map``."""
    if isinstance(x, (list, tuple)):
        return type(x)(_map(fn, v) if isinstance(v, (list, tuple)) else fn(v) for v in x)
    return fn(x)


class _Factories(TorchFunctionMode):
    """``torch.tensor(data, device=...)`` / ``torch.as_tensor``: made on the host and copied (the copy is seen)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.tensor, torch.as_tensor) and _on_device(kwargs.get("device")):
            _record("copy", f"torch.{func.__name__}(..., device=...)")
            with _no_modes():
                return DeviceTensor(func(*args, **{**kwargs, "device": CPU}))
        return func(*args, **kwargs)


class EmulatedDevice(TorchDispatchMode):
    """The dispatch mode that runs DeviceTensors' operators on the CPU and records host-device waits."""

    def __init__(self) -> None:
        super().__init__()
        self.pinned: list[torch.Tensor] = []  # kept alive, so that their addresses stay theirs
        self.outside: list[Event] = []  #: events while no :meth:`steps` block counts
        self._sink: list[Event] | None = None
        self._factories = _Factories()

    def __enter__(self):
        _active.append(self)
        self._factories.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        _active.remove(self)
        self._factories.__exit__(*exc)
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {}, self)

    def is_pinned(self, t: torch.Tensor) -> bool:
        ptr = t.untyped_storage().data_ptr()
        return any(p.untyped_storage().data_ptr() == ptr for p in self.pinned)

    def record(self, kind: str, op: str) -> None:
        (self.outside if self._sink is None else self._sink).append(Event(kind, op, _where()))

    @contextlib.contextmanager
    def steps(self, run) -> Iterator[Steps]:
        """Sort the events of the ``train_phase`` calls inside the block by optimiser step (a step ends with
        ``method.after_step``); those of the loop's loss copies (``loop._flush``) go to ``Steps.flush``."""
        from ssl_bench.engine import loop

        result, real_flush, method = Steps(), loop._flush, run.method
        real_after = method.after_step

        def after_step(progress):
            real_after(progress)
            result.per_step.append([])
            self._sink = result.per_step[-1]

        def flush(*args, **kwargs):
            self._sink = result.flush
            try:
                return real_flush(*args, **kwargs)
            finally:
                self._sink = result.per_step[-1]

        self._sink = result.per_step[-1]
        method.after_step, loop._flush = after_step, flush
        try:
            yield result
        finally:
            self._sink = None
            del method.after_step
            loop._flush = real_flush


def to_device(run) -> None:
    """Move a Run built on the CPU onto the emulated device, as the engine builds it on a GPU: the method and the
    modules its strategy trains (in place: the optimiser and the strategy keep their references), and the training
    images, labels and domains kept on the device (``run.device_data``). Call inside :class:`EmulatedDevice`."""
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        run.method.to(DEVICE)
        for part in getattr(run.strategy, "parts", [run.strategy]):
            for value in vars(part).values():
                if isinstance(value, torch.nn.Module):
                    value.to(DEVICE)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)
    run.device = DEVICE
    if run.precision != "fp32":
        raise ValueError("emulated device: fp32 only (autocast has no 'meta' device type)")
    run.autocast = contextlib.nullcontext  # fp32: the engine's autocast is disabled; it refuses the device type
    train = run.dataset.train
    run.device_data = (train.images.to(DEVICE), train.labels.to(DEVICE), train.domains.to(DEVICE))
    run.prefetch = False
