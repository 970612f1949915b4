"""The deviation of a stack's RTRL gradient from BPTT, for 1, 2 and 3 layers (the README's table).

Exact element-wise RTRL inside each layer, the loss signal passed between
layers by the step's own backpropagation only (:class:`kfrtrl.Stack`), against
:func:`kfrtrl.bptt` on the same random sequences (inputs and loss signals
N(0, 1) at every step, parameters fixed):

    python bench/stack_deviation.py [--hidden 32] [--steps 50] [--batch 4] [--seeds 5]

Prints, per cell and depth, the cosine similarity and relative error of the
whole gradient and of the bottom layer's (mean and range over the seeds).
"""
import argparse

import numpy as np

import kfrtrl
from kfrtrl.cells.stack import gradient_deviation

N_IN = 8


def run(kind, depth, hidden, steps, batch, seed):
    make = {"elstm": kfrtrl.ELSTM, "lru": kfrtrl.LRU}[kind]
    gen = np.random.default_rng(seed)
    cells = [make(N_IN if i == 0 else hidden, hidden, rng=gen) for i in range(depth)]
    xs = gen.standard_normal((steps, batch, N_IN))
    dls = gen.standard_normal((steps, batch, hidden))
    return gradient_deviation(kfrtrl.Stack(cells), xs, dls)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args()
    print("| cell | layers | cosine (all) | relative error (all) | cosine (layer 0) | relative error (layer 0) |")
    print("|---|---|---|---|---|---|")
    for kind in ("elstm", "lru"):
        for depth in (1, 2, 3):
            res = [run(kind, depth, args.hidden, args.steps, args.batch, s) for s in range(args.seeds)]
            cells = []
            for label in ("all", "0"):
                for j in (0, 1):
                    v = np.array([r[label][j] for r in res])
                    cells.append(f"{v.mean():.3g} ({v.min():.3g}–{v.max():.3g})")
            print(f"| {kind} | {depth} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
