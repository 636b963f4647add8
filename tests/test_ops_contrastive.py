"""The fused contrastive op (ssl_bench._C) against float64 references: values, gradients, gradcheck,
torch.library.opcheck, the dispatch between op and reference. The extension is built by the README
install, so a missing extension fails these tests. CUDA tests skip without a GPU."""

import functools
import logging
import math

import pytest
import torch

from ssl_bench import ops
from ssl_bench.ops import _ext
from ssl_bench.ops import contrastive as C

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
FORMS = ["nt_xent", "info_nce", "info_nce_symmetric", "moco"]


def test_extension_is_built():
    assert _ext.available(), "ssl_bench._C is not built: run `pip install --no-build-isolation -e .`"
    assert hasattr(torch.ops.ssl_bench, "contrastive")
    assert ops.backend().startswith("compiled")


def inputs(form, n, d, dtype=torch.float64, device="cpu", queue=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(2)]
    if form == "moco":
        xs.append(torch.randn(queue, d, generator=g, dtype=torch.float64))
    return [x.to(device=device, dtype=dtype).requires_grad_() for x in xs]


def fused(form, xs, tau):
    return {
        "nt_xent": lambda: C.nt_xent(*xs, tau),
        "info_nce": lambda: C.info_nce(*xs, tau, symmetric=False),
        "info_nce_symmetric": lambda: C.info_nce(*xs, tau),
        "moco": lambda: C.moco_info_nce(*xs, tau),
    }[form]()


def reference(form, xs, tau):
    return {
        "nt_xent": lambda: C.nt_xent_reference(*xs, tau),
        "info_nce": lambda: C.info_nce_reference(*xs, tau, symmetric=False),
        "info_nce_symmetric": lambda: C.info_nce_reference(*xs, tau),
        "moco": lambda: C.moco_info_nce_reference(*xs, tau),
    }[form]()


def compare(form, n, d, tau, dtype, device, tol, queue=37):
    """Loss and every input gradient of the fused op vs the float64 reference on the same (rounded) inputs.

    Error = ||got - want|| / ||want||, with ||want|| floored at 1/tau * 1e-2 * sqrt(numel) so that exactly
    zero references (N = 1 has no negatives) are compared in absolute terms at the logits' scale. On CUDA
    the floor is 1/tau * 1e-1 * sqrt(numel): there the similarities come from cuBLAS and the positive's
    similarity from a separate reduction, so a loss that is exactly zero keeps their rounding difference,
    about sqrt(D) * eps / tau."""
    xs = inputs(form, n, d, dtype, device, queue=queue)
    ref_in = [x.detach().double().cpu().requires_grad_() for x in xs]
    want = reference(form, ref_in, tau)
    got = fused(form, xs, tau)
    assert got.dtype == dtype
    pairs = [(got, want)] + list(zip(torch.autograd.grad(got, xs), torch.autograd.grad(want, ref_in)))
    for i, (a, b) in enumerate(pairs):
        a = a.double().cpu()
        floor = (1e-1 if device == "cuda" else 1e-2) / tau * math.sqrt(b.numel())
        err = ((a - b).norm() / max(b.norm().item(), floor)).item()
        assert err <= tol, f"{form} N={n} D={d} tau={tau} {dtype}: {'loss' if i == 0 else f'grad {i}'} error {err:.2e}"


TAUS = (0.07, 0.2, 0.5, 1.0)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("n", [1, 2, 7, 33, 130])
def test_matches_float64_reference_fp32(form, n):
    # every D at every N; the temperature rotates so that each (D, tau) pair occurs over the Ns
    for j, d in enumerate((3, 16, 129)):
        compare(form, n, d, TAUS[(n + j) % 4], torch.float32, "cpu", tol=1e-5)


@pytest.mark.parametrize("form", FORMS)
def test_large_and_ragged_tiles(form):
    # more rows than one CPU block (128) and columns than one tile (1024), neither a multiple
    compare(form, 1100, 20, 0.1, torch.float32, "cpu", tol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_cpu(dtype):
    for form in FORMS:
        compare(form, 45, 32, 0.1, dtype, "cpu", tol=1e-2)


@pytest.mark.parametrize("form", FORMS)
def test_gradcheck_float64(form):
    xs = inputs(form, 6, 5, queue=7)
    assert torch.autograd.gradcheck(lambda *t: fused(form, list(t), 0.3), xs)


@pytest.mark.parametrize("mode", [C.NT_XENT, C.INFO_NCE, C.INFO_NCE_SYMMETRIC, C.MOCO])
def test_opcheck(mode):
    q, k, queue = (torch.nn.functional.normalize(torch.randn(m, 8, dtype=torch.float64), dim=1) for m in (5, 5, 9))
    q.requires_grad_(), k.requires_grad_()
    torch.library.opcheck(torch.ops.ssl_bench.contrastive.default, (q, k, queue if mode == C.MOCO else None, 5.0, mode))


def test_op_memory_does_not_hold_the_similarity_matrix():
    # everything autograd keeps between forward and backward is O(N·D): no N x N tensor
    n, d = 300, 16
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    xs = inputs("nt_xent", n, d, torch.float32)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        C.nt_xent(*xs, 0.1)
    assert saved and max(saved) <= 2 * n * d


def test_reference_is_forced_by_env_and_visible(monkeypatch, caplog):
    monkeypatch.setenv("SSL_BENCH_OPS", "reference")
    assert ops.backend() == "reference"
    xs = inputs("nt_xent", 5, 4, torch.float32)
    loss = C.nt_xent(*xs, 0.1)
    assert loss.grad_fn.name() != "torch::autograd::CppNode<GeneratedBackward>" and "ssl_bench" not in str(loss.grad_fn)
    monkeypatch.delenv("SSL_BENCH_OPS")
    assert ops.backend().startswith("compiled")


def test_too_small_temperature_uses_reference_with_warning(caplog):
    xs = inputs("info_nce", 9, 4, torch.float32)
    with caplog.at_level(logging.WARNING, logger="ssl_bench.ops"):
        C._warned.discard("tau")
        got = C.info_nce(*xs, 0.01)
    assert "temperature" in caplog.text
    torch.testing.assert_close(got, C.info_nce_reference(*xs, 0.01))


def test_bad_inputs_are_rejected():
    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    with pytest.raises(RuntimeError, match="shape of q"):
        torch.ops.ssl_bench.contrastive(q, q[:3], None, 5.0, C.INFO_NCE)
    with pytest.raises(RuntimeError, match="needs a queue"):
        torch.ops.ssl_bench.contrastive(q, q, None, 5.0, C.MOCO)
    with pytest.raises(RuntimeError, match="temperature"):
        torch.ops.ssl_bench.contrastive(q, q, None, 100.0, C.INFO_NCE)


# ----------------------------------------------------------------------------------------------- CUDA
@cuda
def test_cuda_kernels_built():
    assert _ext.has_cuda(), "ssl_bench._C was built without CUDA: rebuild with SSL_BENCH_CUDA=1"


@cuda
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("n", [1, 7, 33, 130, 1000])
def test_cuda_matches_float64_reference_fp32(form, n):
    for d in (3, 16, 129):
        for tau in TAUS:
            compare(form, n, d, tau, torch.float32, "cuda", tol=1e-5)


@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("form", FORMS)
def test_cuda_half_precision(form, dtype):
    for n, d in [(33, 16), (300, 129), (1000, 128)]:
        compare(form, n, d, 0.1, dtype, "cuda", tol=1e-2)


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("form", FORMS)
def test_cuda_several_tiles(form, dtype):
    # more rows (and queue entries) than one 4096 x 4096 tile, none a multiple of it
    compare(form, 4099, 33, 0.1, dtype, "cuda", tol=1e-5 if dtype == torch.float32 else 1e-2, queue=8200)


@cuda
@pytest.mark.parametrize("tile,sizes", [(100, [(1, 5), (7, 100), (257, 333)]), (1024, [(4099, 8200)])])
def test_cuda_tile_edges(tile, sizes, monkeypatch):
    # ragged tiles, smaller than one block of the kernels (256 columns, 32 rows) or many per problem
    monkeypatch.setenv("SSL_BENCH_CONTRASTIVE_TILE", str(tile))
    for n, queue in sizes:
        for form in FORMS:
            for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2)):
                compare(form, n, 33, 0.1, dtype, "cuda", tol=tol, queue=queue)


@cuda
@pytest.mark.parametrize("form", FORMS)
def test_cuda_gradcheck_float64(form):
    xs = inputs(form, 70, 5, device="cuda")
    assert torch.autograd.gradcheck(lambda *t: fused(form, list(t), 0.3), xs)


@cuda
@pytest.mark.parametrize("mode", [C.NT_XENT, C.INFO_NCE_SYMMETRIC, C.MOCO])
def test_cuda_opcheck(mode):
    q, k, queue = (torch.nn.functional.normalize(torch.randn(m, 8, device="cuda"), dim=1) for m in (65, 65, 70))
    q.requires_grad_(), k.requires_grad_()
    torch.library.opcheck(torch.ops.ssl_bench.contrastive.default, (q, k, queue if mode == C.MOCO else None, 5.0, mode))


# ------------------------------------------------------------------------- rows against gathered columns
@pytest.mark.parametrize("rows,cols,offset", [(7, 21, -1), (7, 21, 0), (7, 21, 14), (130, 1100, 970), (1, 1, -1)])
def test_lse_rows_matches_reference(rows, cols, offset):
    g = torch.Generator().manual_seed(rows)
    r, c = (torch.nn.functional.normalize(torch.randn(m, 9, generator=g, dtype=torch.float64), dim=1) for m in (rows, cols))
    r32, c32 = r.float().requires_grad_(), c.float().requires_grad_()
    r, c = r.requires_grad_(), c.requires_grad_()
    w = torch.randn(rows, generator=g, dtype=torch.float64)
    want = C.lse_rows_reference(r, c, 0.2, offset)
    got = C.lse_rows(r32, c32, 0.2, offset)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    for a, b in zip(torch.autograd.grad((got * w).sum(), (r32, c32)), torch.autograd.grad((want * w).sum(), (r, c))):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)


def test_lse_rows_gradcheck_and_opcheck():
    r, c = (torch.nn.functional.normalize(torch.randn(m, 4, dtype=torch.float64), dim=1).requires_grad_() for m in (5, 11))
    assert torch.autograd.gradcheck(lambda a, b: C.lse_rows(a, b, 0.3, 3), (r, c))
    torch.library.opcheck(torch.ops.ssl_bench.contrastive_lse.default, (r, c, 2.0, 6))
    torch.library.opcheck(torch.ops.ssl_bench.contrastive_lse.default, (r, c, 2.0, -1))


@cuda
def test_cuda_lse_rows():
    r, c = (torch.nn.functional.normalize(torch.randn(m, 32, device="cuda"), dim=1) for m in (300, 5000))
    for offset in (-1, 4000):
        torch.testing.assert_close(C.lse_rows(r, c, 0.1, offset), C.lse_rows_reference(r, c, 0.1, offset), rtol=1e-4, atol=1e-4)
    torch.library.opcheck(torch.ops.ssl_bench.contrastive_lse.default, (r[:65].requires_grad_(), c[:70].requires_grad_(), 5.0, 3))


# ---------------------------------------------------------------------------------- across processes
DIST_FORMS = ("nt_xent", "info_nce", "info_nce_symmetric")


def _note_size(sizes, t):
    sizes.append(t.numel())
    return t


def _distributed_worker(rank, world, init_file, cases, queue_out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for case, data in enumerate(cases):
            n = data[0].shape[0] // world
            for form in DIST_FORMS:
                for path in ("fused", "reference"):
                    xs = [x[rank * n : (rank + 1) * n].clone().requires_grad_() for x in data]
                    saved: list[int] = []
                    with torch.autograd.graph.saved_tensors_hooks(functools.partial(_note_size, saved), lambda t: t):
                        if path == "fused":
                            loss = fused(form, xs, 0.2)
                        else:
                            with ops.reference_ops():
                                loss = fused(form, xs, 0.2)
                    grads = torch.autograd.grad(loss, xs)
                    queue_out.put((case, form, path, rank, loss.item(), [g.numpy() for g in grads], max(saved)))
    finally:
        dist.destroy_process_group()


def test_negatives_gathered_across_two_gloo_processes(tmp_path):
    """Two processes with half the batch each (odd sizes too): the mean of their losses is the one-process loss on
    the full batch (float64 reference), and each process's gradient (its rows) is world_size times the full
    loss's gradient there; by the fused op (which keeps nothing of size n_local x N for backward) and by the
    dense reference."""
    import torch.multiprocessing as mp

    world, sizes = 2, [(6, 5), (7, 3), (41, 2)]  # (rows per process, D)
    cases = [[torch.randn(world * n, d, dtype=torch.float64) for _ in range(2)] for n, d in sizes]
    out = mp.get_context("spawn").Queue()
    mp.start_processes(_distributed_worker, args=(world, str(tmp_path / "rdv"), cases, out), nprocs=world, start_method="spawn")
    results = [out.get(timeout=60) for _ in range(len(cases) * 2 * len(DIST_FORMS) * world)]
    for case, ((n, d), data) in enumerate(zip(sizes, cases)):
        for form in DIST_FORMS:
            full = [x.clone().requires_grad_() for x in data]
            want = reference(form, full, 0.2)
            want_grads = torch.autograd.grad(want, full)
            for path in ("fused", "reference"):
                mine = [r for r in results if r[:3] == (case, form, path)]
                assert len(mine) == world
                assert abs(sum(r[4] for r in mine) / world - want.item()) < 1e-10, (n, d, form, path)
                for _, _, _, rank, _, grads, _ in mine:
                    for g, w in zip(grads, want_grads):
                        torch.testing.assert_close(torch.from_numpy(g) / world, w[rank * n : (rank + 1) * n])
                if path == "fused" and n > 4 * d:  # O(N·D) saved: no local-rows x all-columns logits
                    assert max(r[6] for r in mine) <= 2 * world * 2 * n * d, (form, [r[6] for r in mine])
