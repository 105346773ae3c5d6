"""Build glue for the C++ kernels of the sparse compute backend (dst_cli/sparse/backend.py); the package's
metadata is in pyproject.toml.

The kernels are built twice, for AVX-512 and for AVX2 + FMA, and the backend loads the one the CPU runs. They
need only a C++17 compiler with OpenMP (g++ or clang++), nothing from torch at build time. They are optional:
when they cannot be built the install still succeeds, and asking for the sparse backend says how to build them
(python setup.py build_ext --inplace, or pip install -e .).
"""
from setuptools import Extension, setup

KERNELS = "dst_cli/sparse/kernels"
INSTRUCTION_SETS = {
    "avx512": (64, ["-mavx512f", "-mavx512vl", "-mavx512dq", "-mavx512bw", "-mavx2", "-mfma"]),
    "avx2": (32, ["-mavx2", "-mfma"]),
}


def kernels(instruction_set: str) -> Extension:
    vec_bytes, flags = INSTRUCTION_SETS[instruction_set]
    name = f"_{instruction_set}"
    return Extension(
        f"dst_cli.sparse.kernels.{name}",
        sources=[f"{KERNELS}/{instruction_set}.cpp"],
        depends=[f"{KERNELS}/stream_kernels.h"],
        define_macros=[("VEC_BYTES", str(vec_bytes)), ("KERNELS_MODULE", name),
                       ("KERNELS_MODULE_NAME", f'"{name}"')],
        extra_compile_args=["-O3", "-std=c++17", "-fopenmp", "-fno-math-errno", *flags],
        extra_link_args=["-fopenmp"],
        language="c++",
        optional=True,
    )


setup(ext_modules=[kernels(name) for name in INSTRUCTION_SETS])
