"""Builds the C++/CUDA operators in csrc/ into ``ssl_bench._C``.

The C++ (CPU) kernels are always built. The CUDA kernels (minutes of nvcc) are built by default only
when nvcc, a CUDA build of torch and a visible GPU are all present; ``SSL_BENCH_CUDA=1`` forces them
without a GPU (e.g. a wheel for a cluster, built on its login node; failing if nvcc or CUDA torch is
missing) and ``SSL_BENCH_CUDA=0`` disables them. ``TORCH_CUDA_ARCH_LIST`` picks the GPU architectures
(default here: :data:`ARCHS`, machine code for A100 and H100 and PTX that the driver compiles for newer GPUs,
which would otherwise get "no kernel image is available").
"""

import glob
import os

from setuptools import setup

#: the default ``TORCH_CUDA_ARCH_LIST``: sm_80 and sm_90 machine code, and compute_90 PTX for later GPUs
ARCHS = "8.0;9.0+PTX"


def gpu_visible() -> bool:
    """Whether this machine has a GPU the CUDA build of torch can see (the default for building CUDA)."""
    import torch

    try:
        return torch.cuda.is_available() and torch.cuda.device_count() > 0
    except Exception:  # noqa: BLE001 - a broken driver counts as no GPU
        return False


def build_cuda(want: str, possible: bool, gpu_visible=gpu_visible) -> bool:
    """``SSL_BENCH_CUDA`` (``want``) 1/true/yes: build CUDA (an error when not ``possible``); 0/false/no: never;
    unset or auto: when possible and a GPU is visible."""
    want = want.strip().lower() or "auto"
    if want in ("1", "true", "yes"):
        if not possible:
            raise RuntimeError("SSL_BENCH_CUDA=1 but nvcc or a CUDA build of torch is missing")
        return True
    return want not in ("0", "false", "no") and possible and gpu_visible()


def extensions():
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    if not sources:
        return [], {}
    if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")) and os.path.isdir("/usr/local/cuda/lib64"):
        # torch would take CUDA_HOME from the nvcc on PATH; when that is a wrapper script
        # (as in /usr/local/bin), its parent has no CUDA libraries to link against.
        os.environ["CUDA_HOME"] = "/usr/local/cuda"
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    possible = CUDA_HOME is not None and torch.version.cuda is not None and bool(cuda_sources)
    use_cuda = build_cuda(os.environ.get("SSL_BENCH_CUDA", ""), possible, gpu_visible)
    cxx = ["-O3", "-g0"] + (["-fopenmp"] if os.name != "nt" else [])
    if use_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", ARCHS)
        ext = CUDAExtension(
            "ssl_bench._C",
            sources + cuda_sources,
            include_dirs=[os.path.abspath("csrc")],
            define_macros=[("SSL_BENCH_WITH_CUDA", None)],
            extra_link_args=["-fopenmp"],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo"]},
        )
    else:
        ext = CppExtension(
            "ssl_bench._C",
            sources,
            include_dirs=[os.path.abspath("csrc")],
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
        )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


if __name__ == "__main__":  # (setuptools runs this file as __main__; tests import build_cuda)
    ext_modules, cmdclass = extensions()
    setup(ext_modules=ext_modules, cmdclass=cmdclass)
