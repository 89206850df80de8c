"""torch.mm's rate on the matrix products of a packed GPT-2 forward, for bench/scale.sh to set
beside the forward's own: GFLOP/s over the shapes [rows, D] x [D, 3D], [D, D], [D, 4D],
[4D, D] and [D, V] (the unembedding), weighted as one forward runs them (L of each block
product, one unembedding), at a thread count.

  mm_rate.py ROWS D LAYERS VOCAB THREADS [DTYPE]

DTYPE is float32 (the default) or float64 (the rounding envelope's passes).
"""

import sys
import time

import torch


def main(rows, width, layers, vocab, threads, dtype="float32"):
    torch.set_num_threads(threads)
    torch.set_default_dtype(getattr(torch, dtype))
    shapes = [(width, 3 * width, layers), (width, width, layers), (width, 4 * width, layers), (4 * width, width, layers), (width, vocab, 1)]
    operands = [(torch.randn(rows, inner), torch.randn(inner, outer), count) for inner, outer, count in shapes]
    flops = sum(2 * rows * a.shape[1] * b.shape[1] * count for a, b, count in operands)
    best = float("inf")
    for _ in range(4):  # the first is a warm-up; the fastest of the rest counts
        start = time.perf_counter()
        for a, b, count in operands:
            for _ in range(count):
                torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    print(f"{flops / best / 1e9:.1f}")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:6]), *sys.argv[6:7])
