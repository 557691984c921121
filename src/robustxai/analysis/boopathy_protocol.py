"""Seed 000's PGD accuracy protocol (Boopathy et al., spec 3 ``pgd_attack``): the paper-style table steps x eps.

The images are the first ``num_images`` of ``np.random.seed(99); np.random.permutation(N_test)``; the attack
is our :class:`~robustxai.attacks.pgd.PGD` with the seed's settings: L-inf, CE, **no random start**, a step
of 0.01 for every eps, the last iterate. Without a random start the run with more steps passes through
the iterates of the shorter ones, so one run of ``max(steps)`` steps per eps gives every row: the
accuracy after s steps is read at the s-th iterate through PGD's objective hook (no second loop).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from robustxai.attacks.pgd import PGD
from robustxai.utils.validation import check_range

MNIST_EPS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.35, 0.4)
CIFAR_EPS = tuple(e / 255 for e in (0, 2, 4, 6, 8, 9, 10))


def seed_permutation(n_test: int, num_images: int = 200, seed: int = 99) -> Tensor:
    """The seed's evaluation images: the first ``num_images`` of NumPy's seeded permutation of the test split."""
    if not 1 <= num_images <= n_test:
        raise ValueError(f"num_images must be in [1, {n_test}] (the test split size), got {num_images}")
    return torch.from_numpy(np.random.RandomState(seed).permutation(n_test)[:num_images].astype(np.int64))


class _RecordingPGD(PGD):
    """PGD that notes, through its objective hook, which images are still correct after each marked step count."""

    def __init__(self, marks: Sequence[int], **kwargs) -> None:
        super().__init__(**kwargs)
        self.marks = {int(m) for m in marks}
        self.correct: dict[int, Tensor] = {}
        self._calls = 0

    def attack_objective(self, model: nn.Module, x: Tensor, x_adv: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        value, logits = super().attack_objective(model, x, x_adv, targets)
        if self._calls in self.marks:  # call j sees the iterate after j steps; call `steps` is the final judge
            self.correct[self._calls] = (logits.detach().argmax(dim=1) == targets)
        self._calls += 1
        return value, logits


class BoopathyPGDProtocol:
    """The seed's PGD table: accuracy on its seeded image set after ``steps`` (rows) at every ``eps`` (columns).

    ``eps``: the seed's MNIST list by default (CIFAR-10 / Restricted ImageNet: ``CIFAR_EPS``);
    ``batch_size`` images per attack pass (the seed attacks all 200 at once). eps = 0 is clean accuracy.
    """

    def __init__(self, eps: Sequence[float] = MNIST_EPS, steps: Sequence[int] = (1, 10, 100, 200),
                 step_size: float = 0.01, num_images: int = 200, seed: int = 99, batch_size: int = 200) -> None:
        eps, steps = [float(e) for e in eps], [int(s) for s in steps]
        if not eps or not steps:
            raise ValueError("eps and steps must be non-empty lists")
        for e in eps:
            check_range("eps", e, low=0.0)
        for s in steps:
            check_range("steps", s, low=1)
        check_range("step_size", step_size, low=0.0, low_open=True)
        check_range("num_images", num_images, low=1)
        check_range("batch_size", batch_size, low=1)
        self.eps, self.steps = eps, sorted(set(steps))
        self.step_size, self.num_images, self.seed, self.batch_size = float(step_size), int(num_images), int(seed), int(batch_size)

    def indices(self, n_test: int) -> Tensor:
        """Positions of the protocol's images in a test split of ``n_test`` images."""
        return seed_permutation(n_test, min(self.num_images, n_test), self.seed)

    def accuracy(self, model: nn.Module, x: Tensor, y: Tensor, progress: bool = False) -> Tensor:
        """Accuracy (len(steps), len(eps)) of ``model`` on ``(x, y)`` under the protocol's PGD."""
        out = torch.zeros(len(self.steps), len(self.eps), dtype=torch.float64)
        with torch.no_grad():
            clean = torch.cat([model(x[i:i + self.batch_size]).argmax(1) == y[i:i + self.batch_size]
                               for i in range(0, len(x), self.batch_size)])
        for j, eps in enumerate(tqdm(self.eps, desc="seed-000 PGD grid (eps)", disable=not progress, leave=False)):
            if eps == 0.0:
                out[:, j] = clean.double().mean()
                continue
            correct = {s: [] for s in self.steps}
            for i in range(0, len(x), self.batch_size):
                attack = _RecordingPGD(self.steps, norm="linf", eps=eps, step_size=self.step_size,
                                       steps=max(self.steps), random_start=False, loss="ce")
                attack.run(model, x[i:i + self.batch_size], y[i:i + self.batch_size])
                for s in self.steps:
                    correct[s].append(attack.correct[s])
            for r, s in enumerate(self.steps):
                out[r, j] = torch.cat(correct[s]).double().mean()
        return out

    def __repr__(self) -> str:
        return (f"BoopathyPGDProtocol(eps={self.eps}, steps={self.steps}, step_size={self.step_size:g}, "
                f"num_images={self.num_images}, seed={self.seed})")


def metric_name(steps: int, eps: float) -> str:
    """The logged name of one cell: ``test/boopathy_pgd/steps<s>/eps<e>``."""
    return f"test/boopathy_pgd/steps{steps}/eps{eps:g}"


def table_markdown(acc: Tensor, eps: Sequence[float], steps: Sequence[int], title: str = "") -> str:
    """The paper-style table of one network: a row per steps count, a column per eps."""
    lines = ([f"**{title}**", ""] if title else [])
    lines += ["| steps | " + " | ".join(f"eps {e:g}" for e in eps) + " |", "|---|" + "---|" * len(eps)]
    lines += [f"| {s} | " + " | ".join(f"{float(v):.3f}" for v in row) + " |" for s, row in zip(steps, acc)]
    return "\n".join(lines)


def compare_networks(sweep_dir: Path, steps: int = 200) -> str:
    """Methods x eps at ``steps`` from the ``results.json`` of every job of a multirun (one network each)."""
    rows, all_eps = [], set()
    for results in sorted(Path(sweep_dir).glob("*/results.json"), key=lambda p: (len(p.parent.name), p.parent.name)):
        data = json.loads(results.read_text())
        prefix = f"test/boopathy_pgd/steps{steps}/eps"
        cells = {float(k[len(prefix):]): v for k, v in data.get("metrics", {}).items() if k.startswith(prefix)}
        if cells:
            rows.append((Path(str(data.get("checkpoint", results.parent.name))).stem, cells))
            all_eps |= set(cells)
    if not rows:
        raise FileNotFoundError(f"no job under {sweep_dir} logged test/boopathy_pgd/steps{steps}/...: "
                                f"was it run with eval=boopathy (and that steps count)?")
    eps = sorted(all_eps)
    lines = [f"PGD accuracy (seed 000's protocol, {steps} steps of 0.01, no random start)", "",
             "| network | " + " | ".join(f"eps {e:g}" for e in eps) + " |", "|---|" + "---|" * len(eps)]
    lines += [f"| {name} | " + " | ".join("" if cells.get(e) is None else f"{cells[e]:.3f}" for e in eps) + " |"
              for name, cells in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m robustxai.analysis.boopathy_protocol <multirun dir> [--steps 200]``: print and save the table."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)
    table = compare_networks(args.sweep_dir, args.steps)
    (args.sweep_dir / f"boopathy_pgd_steps{args.steps}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()


__all__ = [
    "CIFAR_EPS",
    "MNIST_EPS",
    "BoopathyPGDProtocol",
    "compare_networks",
    "metric_name",
    "seed_permutation",
    "table_markdown",
]
