"""Benchmark: qnnlib's Monte Carlo estimator of Δx, Δp against a plain one-sample-at-a-time loop.

Run from the repository root:  .venv/bin/python benchmarks/bench_uncertainty.py [--threads 1]

The integrand is the neural wave function of class 8 of an MnistCNN3 in pixel space (M = 784),
briefly trained on real MNIST digits when the data is present (random weights otherwise; the
speed does not depend on the weights). Three ways to get the SPEC §3 sums over N uniform points:

1. ``neural_moments`` (qnnlib): batches of its default size (256 points for M = 784 on a CPU), one
   forward and one backward pass of the summed loss per batch, float64 sums as matrix–vector products, 32 groups for the error bars;
2. the naive reference written out below: for each point a forward pass, a backward pass for its
   own gradient, and the sums accumulated in Python floats (float64), coordinate by coordinate;
3. the network alone: the same batched forward + backward without any sums, the ceiling for (1).

(1) and (2) are timed alternately in the same run, ``repeats`` times (median reported); the naive
loop runs on fewer points, since only its rate matters. Both are also run on one common set of
points, and their Δx_i, Δp_i, B_i compared against (1)'s standard errors. The last line is the
speed ratio (1)/(2).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from qnnlib.models import MnistCNN3
from qnnlib.uncertainty import default_batch_size, neural_moments

LABEL = 8
SHAPE = (1, 28, 28)


def make_model(batches=50):
    """MnistCNN3, trained for a few Adam steps on MNIST if the data is present, in eval mode."""
    torch.manual_seed(0)
    model = MnistCNN3()
    try:
        from qnnlib.data import load_dataset

        train = load_dataset("mnist", "train")
    except FileNotFoundError:
        return model.eval(), "random weights (no MNIST data found)"
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(batches):
        index = torch.randint(0, len(train.y), (128,), generator=generator)
        loss = F.cross_entropy(model(train.x[index]), train.y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval(), f"trained for {batches} Adam steps on {train.identity}"


def naive_moments(model, x, label=LABEL):
    """The SPEC §3 estimator, one point at a time: returns (mean_x, dx, mean_p, dp, boundary) lists.

    For each point: l = CE(model(x_n), label), g = ∂l/∂x_n (its own backward pass), then
    Σw, Σw x_i, Σw x_i², Σl g_i, Σg_i², Σl g_i x_i with w = l², accumulated in Python floats.
    """
    m = x[0].numel()
    target = torch.tensor([label])
    sum_w = 0.0
    s_wx, s_wxx, s_lg, s_gg, s_lgx = ([0.0] * m for _ in range(5))
    for n in range(x.shape[0]):
        xn = x[n:n + 1].clone().requires_grad_(True)
        loss = F.cross_entropy(model(xn), target)
        (grad,) = torch.autograd.grad(loss, xn)
        l = loss.item()
        xs, gs = xn.detach().flatten().tolist(), grad.flatten().tolist()
        w = l * l
        sum_w += w
        for i in range(m):
            xi, gi = xs[i], gs[i]
            s_wx[i] += w * xi
            s_wxx[i] += w * xi * xi
            s_lg[i] += l * gi
            s_gg[i] += gi * gi
            s_lgx[i] += l * gi * xi
    mean_x = [s / sum_w for s in s_wx]
    dx = [max(s / sum_w - mx * mx, 0.0) ** 0.5 for s, mx in zip(s_wxx, mean_x)]
    mean_p = [s / sum_w for s in s_lg]
    dp = [max(s / sum_w - mp * mp, 0.0) ** 0.5 for s, mp in zip(s_gg, mean_p)]
    boundary = [1 + 2 * (s - mx * slg) / sum_w for s, mx, slg in zip(s_lgx, mean_x, s_lg)]
    return mean_x, dx, mean_p, dp, boundary


def network_only(model, n):
    """The batched forward + backward of (1) alone, without drawing points or summing: its ceiling."""
    batch_size = default_batch_size(784)
    x = torch.rand(batch_size, *SHAPE).contiguous(memory_format=torch.channels_last)
    target = torch.full((batch_size,), LABEL)
    start = time.perf_counter()
    for _ in range(0, n, batch_size):
        xv = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xv), target, reduction="none")
        torch.autograd.grad(loss.sum(), xv)
    return n / (time.perf_counter() - start)


def compare(model, n, seed=1):
    """Run both on the same n points: max |naive − qnnlib| / stderr per quantity, and aggregates."""
    # moments() draws its uniform points as torch.rand(batch, M, generator) in batches; with one
    # batch of n points the same seed gives exactly these points.
    x = torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))
    ours = neural_moments(model, LABEL, SHAPE, n_samples=n, batch_size=n, generator=torch.Generator().manual_seed(seed))
    naive = [torch.tensor(v, dtype=torch.float64) for v in naive_moments(model, x)]
    rows = {}
    for name, value, stderr in (("mean_x", naive[0], None), ("dx", naive[1], ours.dx_stderr),
                                ("mean_p", naive[2], None), ("dp", naive[3], ours.dp_stderr),
                                ("boundary", naive[4], ours.boundary_stderr)):
        diff = (value - getattr(ours, name).flatten()).abs()
        rows[name] = (float(diff.max()), None if stderr is None else float((diff / stderr.flatten()).max()))
    naive_dx, naive_dp = float(naive[1].sum().sqrt()), float(naive[3].sum().sqrt())
    return rows, ours.aggregate("paper"), ours.aggregate_stderr("paper"), (naive_dx, naive_dp)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16384, help="points for qnnlib per repeat")
    parser.add_argument("--naive-samples", type=int, default=256, help="points for the naive loop per repeat")
    parser.add_argument("--common", type=int, default=512, help="points of the common sample for the check")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, provenance = make_model()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); MnistCNN3 {provenance}; "
          f"ψ of class {LABEL} in pixel space, M = 784")

    rows, (dx, dp), (dx_err, dp_err), (naive_dx, naive_dp) = compare(model, args.common)
    print(f"check on a common sample of {args.common} points (same points for both):")
    for name, (diff, in_stderr) in rows.items():
        extra = "" if in_stderr is None else f" = {in_stderr:.1e} standard errors"
        print(f"  max_i |naive − qnnlib| of {name:8s}: {diff:.1e}{extra}")
    print(f"  Δx (paper form): qnnlib {dx:.6f} ± {dx_err:.6f}, naive {naive_dx:.6f}, difference {abs(dx - naive_dx):.1e}")
    print(f"  Δp (paper form): qnnlib {dp:.6f} ± {dp_err:.6f}, naive {naive_dp:.6f}, difference {abs(dp - naive_dp):.1e}")

    # Warm-up: first calls pay for allocation, oneDNN kernel selection and thread start-up.
    neural_moments(model, LABEL, SHAPE, n_samples=4096, generator=torch.Generator().manual_seed(0))
    naive_moments(model, torch.rand(8, *SHAPE))
    ours_rate, naive_rate = [], []
    for r in range(args.repeats):
        start = time.perf_counter()
        neural_moments(model, LABEL, SHAPE, n_samples=args.samples, generator=torch.Generator().manual_seed(r))
        ours_rate.append(args.samples / (time.perf_counter() - start))
        x = torch.rand(args.naive_samples, *SHAPE, generator=torch.Generator().manual_seed(r))
        start = time.perf_counter()
        naive_moments(model, x)
        naive_rate.append(args.naive_samples / (time.perf_counter() - start))
    ceiling = network_only(model, args.samples)
    ours, naive = statistics.median(ours_rate), statistics.median(naive_rate)
    print(f"qnnlib neural_moments: {ours:,.0f} samples/s (median of {args.repeats} runs of {args.samples:,} points; "
          f"runs: {', '.join(f'{v:,.0f}' for v in ours_rate)})")
    print(f"naive one-at-a-time loop: {naive:,.0f} samples/s (median of {args.repeats} runs of "
          f"{args.naive_samples:,} points; runs: {', '.join(f'{v:,.0f}' for v in naive_rate)})")
    print(f"network forward + backward alone (batches of {default_batch_size(784)}, no sums): {ceiling:,.0f} samples/s")
    print(f"speed ratio qnnlib/naive: {ours / naive:.1f}x")


if __name__ == "__main__":
    main()
