"""AutoAttack (Croce & Hein 2020) behind our attack contract: ``AutoAttack(eps=...)(model, x, y) -> x_adv``.

The attack itself is Croce & Hein's package, not re-implemented here. It is found as the official
``autoattack`` module (installed from its repository) or, failing that, as ``pyautoattack`` (a PyPI
packaging of the same code with a keyword-only API). ``version="standard"`` runs APGD-CE, APGD-T,
FAB-T and Square (5,000 queries) with the package's fixed settings.
"""

from __future__ import annotations

import importlib
from typing import Any, Literal, Sequence

from torch import Tensor, nn

from robustxai.attacks.base import Attack, ModelMode
from robustxai.utils.validation import check_choice, check_range

INSTALL = ("AutoAttack needs Croce & Hein's package: `pip install pyautoattack` (PyPI; what the dev extra "
           "installs) or the official one, `pip install git+https://github.com/fra31/auto-attack`")
NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}


def load_autoattack() -> tuple[str, Any]:
    """``(module name, AutoAttack class)`` of the first importable provider; a clear ImportError otherwise."""
    for name in ("autoattack", "pyautoattack"):
        try:
            return name, importlib.import_module(name).AutoAttack
        except ImportError:
            continue
    raise ImportError(INSTALL)


class AutoAttack(Attack):
    """AutoAttack at ``eps`` in ``norm`` (``linf``, ``l2``, ``l1``), ``version`` standard / plus / rand / custom.

    ``attacks`` lists the attacks of ``version="custom"`` (e.g. ``["apgd-ce", "square"]``); ``batch_size``
    is the package's evaluation batch. The package works in the [0, 1] box only. Images the model
    already misclassifies are returned unchanged, as the package does.
    """

    def __init__(self, norm: Literal["linf", "l2", "l1"] = "linf", eps: float = 0.3,
                 version: Literal["standard", "plus", "rand", "custom"] = "standard",
                 attacks: Sequence[str] | None = None, seed: int = 0, batch_size: int = 500,
                 box: tuple[float, float] = (0.0, 1.0), model_mode: ModelMode = "eval") -> None:
        super().__init__(box=box, model_mode=model_mode)
        check_choice("norm", norm, tuple(NORMS))
        check_choice("version", version, ("standard", "plus", "rand", "custom"))
        check_range("eps", eps, low=0.0, low_open=True)
        check_range("batch_size", batch_size, low=1)
        if self.box != (0.0, 1.0):
            raise ValueError(f"box must be (0, 1) for AutoAttack (the package clips to [0, 1]), got {box}")
        if (version == "custom") != bool(attacks):
            raise ValueError("attacks lists the attacks of version='custom' (e.g. ['apgd-ce', 'square']) "
                             "and only of it")
        self.norm, self.eps, self.version = norm, float(eps), version
        self.attacks = list(attacks) if attacks else None
        self.seed, self.batch_size = int(seed), int(batch_size)

    def rescaled(self, fraction: float) -> "AutoAttack":
        """A copy with ``eps`` multiplied by ``fraction``."""
        check_range("fraction", fraction, low=0.0, low_open=True)
        return AutoAttack(self.norm, self.eps * fraction, self.version, self.attacks, self.seed, self.batch_size,
                          self.box, self.model_mode)

    def adversary(self, model: nn.Module, device: Any) -> Any:
        """The package's ``AutoAttack`` object for ``model`` (either provider's constructor)."""
        provider, cls = load_autoattack()
        if provider == "autoattack":
            adversary = cls(model, norm=NORMS[self.norm], eps=self.eps, version=self.version, seed=self.seed,
                            device=device, verbose=False, **({"attacks_to_run": self.attacks} if self.attacks else {}))
        else:
            adversary = cls(model, norm=NORMS[self.norm], eps=self.eps, version=self.version, seed=self.seed,
                            device=device, attacks=self.attacks)
        return adversary

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        provider, _ = load_autoattack()
        adversary = self.adversary(model, x.device)
        if provider == "autoattack":
            return adversary.run_standard_evaluation(x, y, bs=self.batch_size)
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=self.batch_size)
        return x_adv
