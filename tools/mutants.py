"""Mutation check: plant plausible bugs one at a time and see whether the tests catch them.

Not part of ``make test`` (it runs pytest dozens of times). Usage, from the repository root::

    .venv/bin/python tools/mutants.py                # every mutant, a table and the score
    .venv/bin/python tools/mutants.py --list         # the mutants, without running anything
    .venv/bin/python tools/mutants.py --only U2      # one mutant (repeatable: --only U2 --only E1)
    .venv/bin/python tools/mutants.py --repo /path/to/other/checkout --timeout 300

Each mutant is (short id, what the bug is, alternatives of (source snippet, mutated replacement),
the test files that should catch it). The first alternative whose snippet occurs exactly once in
all of ``qnnlib/**/*.py`` is planted — so a mutant survives modules being split or moved; one whose
snippet is found nowhere (or more than once) is reported "stale" and left out of the score: update
its snippet so it targets the same logical bug. Test files are glob patterns (``tests/test_uncertainty*.py``)
and may carry a ``::node`` or ``-k`` expression to keep each run small.

The repository is copied once into a temporary directory (the original is never touched); each
mutant is written into the copy, pytest runs there (``-x``, fast mode, with a timeout) and the file
is restored. A mutant is "caught" when pytest fails or errors, "survived" when every listed test
passes, "timeout" when it runs past ``--timeout`` (undecided: neither caught nor survived, listed
apart; raise the timeout). Score = caught / (caught + survived).
Exit status 0 (it reports; it does not judge).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import glob
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", ".venv", "_build", "__pycache__", ".pytest_cache", "*.egg-info",
                                ".hypothesis", ".ipynb_checkpoints", "node_modules")


@dataclasses.dataclass(frozen=True)
class Mutant:
    id: str
    bug: str
    edits: tuple  # alternatives: ((snippet, replacement), ...); the first found exactly once is used
    tests: tuple  # pytest arguments: glob patterns of test files (optionally with ::node), "-k", expr


def m(id, bug, edits, *tests):
    if isinstance(edits[0], str):
        edits = (edits,)
    return Mutant(id, bug, tuple(edits), tuple(tests))


A, T, MO = "tests/test_attacks.py", "tests/test_train.py", "tests/test_models.py"
Q, TOY, U = "tests/test_quantum.py", "tests/test_toy.py", "tests/test_uncertainty*.py"
E, R, D = "tests/test_experiments*.py", "tests/test_results*.py", "tests/test_data.py"

MUTANTS = [
    # --- the seven that survived the suite before issue 17 -------------------------------------
    m("U1", "gradient of ψ on a grid computed with its axes transposed",
      (("grad = (g / norm).T.reshape(2, *counts)", "grad = (g / norm).T.reshape(2, *counts).transpose(1, 2)"),
       ("grad = (g / norm).T.reshape(2, points, points)",
        "grad = (g / norm).T.reshape(2, points, points).transpose(1, 2)")), U, "-k", "grid or gradient or wave"),
    m("U2", "bound |1 − B|/2 computed without the absolute value",
      ("return (1.0 - self.boundary).abs() / 2.0", "return (1.0 - self.boundary) / 2.0"), U, "-k", "bound"),
    m("R1", "results JSON written in place instead of atomically (temp file + os.replace)",
      ('fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")',
       "fd, tmp = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), str(path)"), R, E,
      "-k", "atomic or write or killed or corrupt or interrupt or crash or partial"),
    m("E1", "per-epoch random generator not seeded by the epoch",
      ("config.seed * 1_000_003 + epoch * 101 + stream", "config.seed * 1_000_003 + stream"), E,
      "-k", "seed or epoch or generator or resume or shuffl"),
    m("E2", "feature-space head loses its scale (head(u) ≠ network's logits)",
      ("linear.weight.copy_(model.fc.weight[:, active] * scale[active])",
       "linear.weight.copy_(model.fc.weight[:, active])"), E, "-k", "feature or head or scale or tiny_run"),
    m("U3", "class-mean standard error missing its 1/n",
      (("return float((s**2).sum().sqrt() / s.numel())", "return float((s**2).sum().sqrt())"),
       ("stderr = np.sqrt((errors**2).sum(0)) / n", "stderr = np.sqrt((errors**2).sum(0))"),
       ("float(np.sqrt(np.sum([p[key] ** 2 for p in per_label]))) / len(per_label)",
        "float(np.sqrt(np.sum([p[key] ** 2 for p in per_label])))")), U, E,
      "-k", "mean or stderr or standard_error or class"),
    m("E3", "features computed with the network in training mode",
      (("    model.eval()\n    device = next(model.parameters()).device\n    batch_size = batch_size or",
        "    device = next(model.parameters()).device\n    batch_size = batch_size or"),), E,
      "-k", "feature or mode or eval or train"),
    # --- attacks ------------------------------------------------------------------------------
    m("A1", "FGSM steps down the gradient (sign flipped)",
      ("adv = images.detach() + eps * grad.sign()", "adv = images.detach() - eps * grad.sign()"), A),
    m("A2", "PGD steps down the gradient (sign flipped)",
      ("adv = adv.detach() + alpha * grad.sign()", "adv = adv.detach() - alpha * grad.sign()"), A),
    m("A3", "PGD without the projection onto the ε-ball",
      ("delta = torch.clamp(adv - images, min=-eps, max=eps)", "delta = adv - images"), A),
    m("A4", "PGD without the clamp to the box",
      ("return torch.clamp(t, min=box[0], max=box[1]) if box is not None else t", "return t"), A),
    m("A5", "FGSM without the clamp to the box",
      ("adv = torch.clamp(adv, min=box[0], max=box[1])", "adv = adv"), A),
    m("A6", "PGD random start ignores the generator",
      ("uniform_(-eps, eps, generator=generator)", "uniform_(-eps, eps)"), A),
    m("A7", "input gradient of the mean loss instead of the per-sample loss (g/N)",
      ('loss = F.cross_entropy(logits, y.to(logits.device).long(), reduction="sum")',
       'loss = F.cross_entropy(logits, y.to(logits.device).long(), reduction="mean")'), A),
    m("A8", "attack runs with the model in train mode (no eval)",
      (("    model.eval()\n    try:\n        yield model", "    try:\n        yield model"),
       ("        self.was_training = self.model.training\n        self.model.eval()",
        "        self.was_training = self.model.training")), A, MO),
    m("A9", "mode restored only at the top module (mixed per-module modes lost) / not restored",
      (("        for module, mode in modes:\n            module.training = mode",
        "        model.train(modes[0][1])"),
       ("        self.model.train(self.was_training)", "        self.model.train(False)")), MO, A),
    m("A10", "label range check off by one (label K accepted)",
      (("if lo < 0 or hi >= classes:", "if lo < 0 or hi > classes:"),
       ("int(y.max()) >= classes", "int(y.max()) > classes")), A, "tests/test_checks.py"),
    m("A11", "clean input's finiteness not checked",
      (("if not (math.isfinite(lo) and math.isfinite(hi)):", "if False:"),
       ('if not bool(torch.isfinite(x).all()):\n        raise ValueError("x must be finite',
        'if False:\n        raise ValueError("x must be finite')), A, "tests/test_checks.py"),
    # --- train --------------------------------------------------------------------------------
    m("T1", "epoch order not drawn from the seeded generator",
      ("order = torch.randperm(n, generator=generator)", "order = torch.randperm(n)"), T),
    m("T2", "gradients accumulate across batches (no zero_grad)",
      ("loss = F.cross_entropy(logits, yb)\n        optimizer.zero_grad(set_to_none=True)",
       "loss = F.cross_entropy(logits, yb)"), T),
    m("T3", "epoch loss is a mean over batches, not samples (short last batch over-weighted)",
      ("loss_sum += loss.detach().double() * len(index)", "loss_sum += loss.detach().double() * batch_size"), T),
    m("T4", "accuracy evaluated in train mode (dropout on)",
      (("    correct = 0\n    with evaluation(model):", "    correct = 0\n    if True:"),
       ("    model.eval()\n    correct = 0", "    correct = 0")), T),
    m("T5", "training continues in eval mode after a callback",
      ("            model.train()  # the callback may evaluate", "            pass  # the callback may evaluate"), T),
    m("T6", "augmentation never flips",
      ("flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)",
       "flip = (torch.rand(n, generator=generator) < 0.0).to(x.device)"), T),
    # --- models -------------------------------------------------------------------------------
    m("M1", "MNIST network without its input normalisation",
      ("            Normalize(MNIST_MEAN, MNIST_STD),\n", ""), MO),
    m("M2", "CifarCNN4 features not post-ReLU (can be negative)",
      ("            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU(),\n",
       "            nn.Conv2d(2 * c, 2 * c, 3, padding=1),\n"), MO),
    m("M3", "residual block drops its skip connection",
      ("return x + self.inner(x)", "return self.inner(x)"), MO),
    # --- quantum, toy -------------------------------------------------------------------------
    m("Q1", "fourth-order derivative stencil with the wrong denominator",
      ("d[2:-2] = (f[:-4] - 8 * f[1:-3] + 8 * f[3:-1] - f[4:]) / (12 * h)",
       "d[2:-2] = (f[:-4] - 8 * f[1:-3] + 8 * f[3:-1] - f[4:]) / (6 * h)"), Q),
    m("Q2", "Δp without subtracting ⟨p⟩²",
      ("var_p = max(mean_p2 - mean_p**2, 0.0)", "var_p = max(mean_p2, 0.0)"), Q),
    m("Q3", "momentum wave function with the wrong phase origin",
      ("np.exp(-1j * p * x[0]) * np.fft.fft(psi)", "np.exp(1j * p * x[0]) * np.fft.fft(psi)"), Q),
    m("Q4", "sech packet scale inverted (Δx ≠ width)",
      ("a = _check_width(width) * np.sqrt(12.0) / np.pi", "a = _check_width(width) * np.pi / np.sqrt(12.0)"), Q),
    m("Y1", "toy data not clamped to the unit square",
      ("return x.clamp(0.0, 1.0).float(), y", "return x.float(), y"), TOY),
    # --- uncertainty estimator ----------------------------------------------------------------
    m("U4", "jackknife without its (K−1) factor",
      (("stderr = ((k - 1) / k * ((replicates - mean) ** 2).sum(0)).sqrt()",
        "stderr = (((replicates - mean) ** 2).sum(0) / k).sqrt()"),
       ("((k - 1) / k * (centred**2).sum(0)).sqrt()", "((centred**2).sum(0) / k).sqrt()")), U,
      "-k", "stderr or standard_error"),
    m("U5", "boundary term B missing its factor 2",
      ("boundary = 1.0 + 2.0 * (s[..., 4, :] - mean_xc * s[..., 2, :]) / w",
       "boundary = 1.0 + (s[..., 4, :] - mean_xc * s[..., 2, :]) / w"), U, "-k", "boundary or bound"),
    m("U6", "Δp_i without subtracting ⟨p_i⟩²",
      ("dp = (s[..., 3, :] / w - mean_p**2).clamp_min(0.0).sqrt()", "dp = (s[..., 3, :] / w).clamp_min(0.0).sqrt()"), U,
      "-k", "closed_form or gaussian or separable"),
    m("U7", "density weights ψ instead of ψ²",
      (("log_qw = 2.0 * log_l.to(torch.float64)", "log_qw = log_l.to(torch.float64)"),
       ("qw = ql * l", "qw = ql")), U, "-k", "closed_form or gaussian or separable"),
    m("U8", "paper-form aggregate computed as root-sum-square",
      ("return dx.sum(-1).sqrt(), dp.sum(-1).sqrt()", "return (dx**2).sum(-1).sqrt(), (dp**2).sum(-1).sqrt()"), U,
      "-k", "aggregate"),
    m("U9", "neural wave function exp(−l) instead of the loss l",
      (("return torch.where(a < cut, a, torch.logaddexp(a_cut, torch.zeros_like(a_cut)).log())",
        "return -torch.logaddexp(a, torch.zeros_like(a))"),  # log-domain estimator: log ψ = −l
       ('return F.cross_entropy(logits, target, reduction="none")',
        'return F.cross_entropy(logits, target, reduction="none").neg().exp()')), U, "-k", "neural"),
    m("U10", "Monte Carlo points not mapped to [low, high]",
      ("x = u.mul_(high - low).add_(low).reshape(b, *shape)", "x = u.reshape(b, *shape)"), U,
      "-k", "box or closed_form"),
    # --- experiments, results -----------------------------------------------------------------
    m("E4", "feature coordinates not clamped to the unit box",
      ("return (features[:, self.active] / self.scale[self.active]).clamp(0.0, 1.0)",
       "return features[:, self.active] / self.scale[self.active]"), E,
      "-k", "feature or box or normalis or tiny_run"),
    m("R2", "non-finite numbers written to JSON as-is (NaN is not JSON)",
      ("if isinstance(value, float) and not math.isfinite(value):\n        return None",
       "if isinstance(value, float) and not math.isfinite(value):\n        return value"), R, E,
      "-k", "nan or finite or json or write or schema"),
    # --- data ---------------------------------------------------------------------------------
    m("D1", "MNIST pixels left in 0..255",
      (("x = mnist.data.unsqueeze(1).float().div_(255.0)", "x = mnist.data.unsqueeze(1).float()"),
       ("x = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255.0)",
        "x = torch.from_numpy(images.copy()).unsqueeze(1).float()")), D),
    m("D2", "stratified subset drops the remainder (n not reached)",
      ("want = n // k + (1 if c < n % k else 0)", "want = n // k"), D),
    m("D3", "subset indices not sorted",
      ("index = torch.cat(picks).sort().values", "index = torch.cat(picks)"), D),
    m("D4", "CIFAR-10 pixels left in 0..255",
      (("return Dataset(images.float().div_(255.0), labels,", "return Dataset(images.float(), labels,"),
       ("x = images.float().div_(255.0)", "x = images.float()")), D),
]


def sources(repo: Path) -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in sorted((repo / "qnnlib").rglob("*.py"))}


def locate(mutant: Mutant, files: dict[Path, str]):
    """(path, snippet, replacement) of the first alternative found exactly once, or a reason."""
    reasons = []
    for snippet, replacement in mutant.edits:
        hits = [(p, text.count(snippet)) for p, text in files.items() if snippet in text]
        total = sum(count for _, count in hits)
        if total == 1:
            return hits[0][0], snippet, replacement
        reasons.append("not found" if total == 0 else f"found {total}×")
    return "; ".join(reasons)


def test_args(mutant: Mutant, repo: Path) -> list[str] | str:
    args, missing = [], []
    for item in mutant.tests:
        if item.startswith("-") or not (item.startswith("tests/") or "/" in item):
            args.append(item)
            continue
        pattern, _, node = item.partition("::")
        found = sorted(glob.glob(str(repo / pattern)))
        if not found:
            missing.append(pattern)
        args += [f"{Path(f).relative_to(repo)}{'::' + node if node else ''}" for f in found]
    if not any(not a.startswith("-") for a in args):
        return f"no test file matches {', '.join(missing)}"
    return args


def run_one(mutant: Mutant, work: Path, timeout: float, python: str) -> tuple[str, float, str]:
    where = locate(mutant, sources(work))
    if isinstance(where, str):
        return "stale", 0.0, where
    args = test_args(mutant, work)
    if isinstance(args, str):
        return "stale", 0.0, args
    path, snippet, replacement = where
    original = path.read_text(encoding="utf-8")
    path.write_text(original.replace(snippet, replacement, 1), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(work), QNNLIB_FAST="1", PYTHONDONTWRITEBYTECODE="1")
    start = time.perf_counter()
    process = subprocess.Popen([python, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider", *args],
                               cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        out, _ = process.communicate(timeout=timeout)
    except BaseException as error:  # timeout, or Ctrl-C: end the whole pytest process group
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if not isinstance(error, subprocess.TimeoutExpired):
            raise
        return "timeout", time.perf_counter() - start, f"over {timeout:.0f} s"
    finally:
        path.write_text(original, encoding="utf-8")  # always restore
    seconds = time.perf_counter() - start
    lines = out.strip().splitlines() or [""]
    if process.returncode == 0:
        return "survived", seconds, lines[-1]
    if process.returncode == 5:  # the -k expression selects nothing: fix the mutant's test selection
        return "stale", seconds, "no tests selected"
    failed = [line for line in lines if line.startswith(("FAILED ", "ERROR "))]
    return "caught", seconds, (failed[0] if failed else lines[-1])[:160]


def _work_copy(repo: Path, root: Path, i: int) -> Path:
    work = root / f"repo{i}"
    shutil.copytree(repo, work, ignore=IGNORE, symlinks=True)
    return work


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", metavar="ID", help="run only this mutant (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutants and whether each is found")
    parser.add_argument("--repo", type=Path, default=ROOT, help="checkout to mutate (default: this one)")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per mutant (default 240)")
    parser.add_argument("--python", default=sys.executable, help="interpreter with the project's packages")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once, each in its own copy (default 1)")
    options = parser.parse_args(argv)
    repo = options.repo.resolve()
    chosen = MUTANTS
    if options.only:
        unknown = set(options.only) - {x.id for x in MUTANTS}
        if unknown:
            print(f"mutants: unknown id(s) {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        chosen = [x for x in MUTANTS if x.id in options.only]
    if options.list:
        files = sources(repo)
        for x in chosen:
            where = locate(x, files)
            state = "STALE: " + where if isinstance(where, str) else str(where[0].relative_to(repo))
            print(f"{x.id:4} {x.bug}\n     {state}; tests: {' '.join(x.tests)}")
        return 0
    results = {}
    with tempfile.TemporaryDirectory(prefix="qnnlib-mutants-") as tmp:
        # One copy per worker: each worker plants one mutant at a time in its own copy.
        copies = queue.Queue()
        for i in range(max(1, options.jobs)):
            copies.put(_work_copy(repo, Path(tmp), i))

        def job(x):
            work = copies.get()
            try:
                return run_one(x, work, options.timeout, options.python)
            finally:
                copies.put(work)

        print(f"{'id':4}  {'result':8}  {'s':>5}  bug / first failing test", flush=True)
        with concurrent.futures.ThreadPoolExecutor(max(1, options.jobs)) as pool:
            for x, (state, seconds, detail) in zip(chosen, pool.map(job, chosen)):
                results[x.id] = (x, state, seconds)
                print(f"{x.id:4}  {state:8}  {seconds:5.0f}  {x.bug}\n{'':22}{detail}", flush=True)
    results = list(results.values())
    caught = [r[0].id for r in results if r[1] == "caught"]
    survived = [r[0].id for r in results if r[1] == "survived"]
    timeouts = [r[0].id for r in results if r[1] == "timeout"]
    stale = [r[0].id for r in results if r[1] == "stale"]
    print(f"\nscore: {len(caught)}/{len(caught) + len(survived)} caught (stale and timed-out mutants not counted)"
          f"\nsurvived: {', '.join(survived) or 'none'}\ntimeout: {', '.join(timeouts) or 'none'}"
          f"\nstale: {', '.join(stale) or 'none'}\n{sum(r[2] for r in results):.0f} s in pytest; worst case "
          f"{len(chosen)} × {options.timeout:.0f} s / {max(1, options.jobs)} job(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
