"""The anchor for matmul benchmarks: numpy's sgemm (OpenBLAS) on the same machine, same
shapes and the same Linear layout as `lorafuse profile matmul` (A [M,K] · W[N,K]ᵀ).
Prints one JSON line per shape, with the fields lorafuse prints.
usage: python3 Tools/bench/numpy_matmul.py M N K [M N K ...] [--repeat R]
"""
import json
import sys
import time

import numpy as np


def main() -> None:
    args = sys.argv[1:]
    repeat = 5
    if "--repeat" in args:
        index = args.index("--repeat")
        repeat = int(args[index + 1])
        del args[index:index + 2]
    sizes = [int(x) for x in args] or [1024, 1024, 1024]
    rng = np.random.default_rng(1)
    for m, n, k in zip(sizes[0::3], sizes[1::3], sizes[2::3]):
        a = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((n, k), dtype=np.float32)
        a @ w.T  # warm-up
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            a @ w.T
            best = min(best, time.perf_counter() - start)
        print(json.dumps({"op": "matmul", "backend": "numpy", "device": f"numpy {np.__version__}", "m": m, "n": n, "k": k,
                          "dtype": "F32", "seconds": best, "gflops": 2 * m * n * k / best / 1e9}))


if __name__ == "__main__":
    main()
