"""Runs ISA (or its min-eps search) on every test batch and logs the seed's ISA statistics under ``test/isa/<name>/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics import CatMetric

from robustxai.analysis.isa_figures import (
    save_bound_scatter,
    save_isa_curves,
    save_isa_overlays,
)
from robustxai.analysis.isa_summary import (
    bound_check,
    monotone_curve,
    point_valid,
    summarize,
)
from robustxai.attacks.isa import ISA
from robustxai.attributions.discrepancy import (
    isa_class_index,
    isa_discrepancy,
    normalized_isa_discrepancy,
)
from robustxai.metrics import functional as MF
from robustxai.utils.wandb import log_image_files

PER_POINT = ("d", "raw", "tau", "pearson", "eps", "valid")


def _point_names(attack: ISA) -> list[str]:
    """Names of the points of an ISA curve: ``eps_adv`` (gamma = 0), then ``x<c>`` per eps multiplier."""
    return ["eps_adv"] + [f"x{c:g}" for c in attack.penalties]


class ISAEvaluation(L.Callback):
    """Attack each test batch with ``attack`` (an :class:`~robustxai.attacks.isa.ISA`) and log its statistics.

    ISA modes (``isa``, ``tradeoff``), per class variant V (the key has ``/<V>`` only in tradeoff mode):
    ``test/isa/<name>/total_discrepancy``, ``.../nslope`` (both per kept point, the seed's),
    ``.../nslope_per_image``, ``.../kendall``, ``.../pearson`` (weighted over the variant's classes as the
    seed does), ``.../curve/<point>`` (the mean monotone normalised discrepancy at ``eps_adv`` and at each
    multiplier ``x<c>``), ``.../eps/<point>`` (mean L-inf size there), ``.../discrepancy/<point>`` (mean
    normalised discrepancy of the valid raw points), ``.../raw_discrepancy/<point>`` (the attack-loss D),
    ``.../kept_images``, ``.../points``; and ``test/isa/<name>/success`` (target reached at the largest
    multiplier), ``.../eps_adv`` (mean minimum eps), ``.../images``.

    ``min_eps`` mode (the bound-tightness check, spec 3): ``.../bound_holds`` (fraction of successful
    images where the two-class l1 CAM discrepancy / (h w) >= the clean margin 0.5 (z_y - z_t)),
    ``.../bound_min_slack``, ``.../margin``, ``.../bound_discrepancy``, ``.../min_eps``, ``.../success``.

    Figures under ``<output_dir>/images/``: ``<name>_curve.png`` (eps against the discrepancy),
    ``<name>_overlay.png`` (image, clean map, gamma = 0 map, ISA map, for ``grid_images`` images) and,
    in min_eps mode, ``<name>_bound.png`` (the margin/discrepancy scatter).
    """

    def __init__(self, name: str, attack: ISA, output_dir: str | Path | None = None, grid_images: int = 6) -> None:
        super().__init__()
        if not isinstance(attack, ISA):
            raise TypeError(f"attack.{name}: ISAEvaluation needs an ISA attack, got {type(attack).__name__}")
        self.name, self.attack = name, attack
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.grid_images = grid_images
        self.grid_path: Path | None = None
        self.figures: list[Path] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        keys = [f"{v}/{k}" for v in self.attack.variants for k in PER_POINT]
        keys += ["success", "eps_adv", "margin", "bound_d", "min_success", "min_eps"]
        self.store = {k: CatMetric(nan_strategy="disable").to(pl_module.device) for k in keys}
        self._examples: dict[str, Any] | None = None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for metric in self.store.values():
            metric.reset()
        self._examples = None

    # -- per batch ------------------------------------------------------------------------------------
    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                          batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        model = pl_module.model
        result = self.attack.run(model, x, y)
        target = result.target
        self.store["success"].update(result.success.float())
        self.store["eps_adv"].update(result.eps_adv)
        x_min = (result.extras.get("points_min_eps") if self.attack.mode == "min_eps"
                 else result.extras[f"points_{self.attack.variants[0]}"])[:, 0]
        with torch.no_grad():
            clean_logits, adv_logits = model(x), model(x_min)
        self._bound(model, x, x_min, y, target, clean_logits, adv_logits)
        if self.attack.mode == "min_eps":
            self._keep_examples(x, {"min-eps": (x_min, None)}, y, target)
            return
        columns: dict[str, tuple[Tensor, Tensor | None]] = {}
        for variant in self.attack.variants:
            points = result.extras[f"points_{variant}"]
            values = self._score(model, x, points, y, target, clean_logits, variant)
            values["eps"] = result.extras[f"eps_{variant}"]
            for key, value in values.items():
                self.store[f"{variant}/{key}"].update(value.float())
            columns.setdefault("gamma = 0 (min eps)", (points[:, 0], None))
            columns[f"ISA {variant}, x{self.attack.penalties[-1]:g}"] = (points[:, -1], None)
        self._keep_examples(x, columns, y, target)

    def _score(self, model: torch.nn.Module, x: Tensor, points: Tensor, y: Tensor, target: Tensor,
               clean_logits: Tensor, variant: str) -> dict[str, Tensor]:
        """Per image and point (N, K): normalised and raw discrepancy, weighted Kendall tau and Pearson r, validity."""
        n, k = points.shape[:2]
        num_classes = clean_logits.shape[1]
        index, weights = isa_class_index(y, target, num_classes, variant)
        with torch.no_grad():
            clean_maps = self.attack.logits_and_maps(model, x, index)[1]
            flat = points.flatten(0, 1)
            adv_logits, adv_maps = self.attack.logits_and_maps(model, flat, index.repeat_interleave(k, 0))
        clean_rep = clean_maps.repeat_interleave(k, 0)
        w = weights.repeat_interleave(k, 0)
        d = normalized_isa_discrepancy(clean_rep, adv_maps, w, self.attack.discrepancy)
        raw = isa_discrepancy(clean_rep, adv_maps, w, self.attack.discrepancy)
        classes = clean_rep.shape[1]
        a, b = clean_rep.flatten(2).flatten(0, 1), adv_maps.flatten(2).flatten(0, 1)
        tau = (MF.kendall_tau(a, b).view(-1, classes).double() * w.double()).sum(1)
        r = (MF.pearson(a, b).view(-1, classes).double() * w.double()).sum(1)
        valid = point_valid(clean_logits.repeat_interleave(k, 0), adv_logits, y.repeat_interleave(k, 0),
                            target.repeat_interleave(k, 0))
        shape = (n, k)
        return {"d": d.view(shape), "raw": raw.view(shape), "tau": tau.view(shape), "pearson": r.view(shape),
                "valid": valid.view(shape)}

    def _bound(self, model: torch.nn.Module, x: Tensor, x_min: Tensor, y: Tensor, target: Tensor,
               clean_logits: Tensor, adv_logits: Tensor) -> None:
        """The bound-tightness quantities at the min-eps example (CAM of a GAP network; skipped without ``cam``)."""
        cam = getattr(model, "cam", None)
        if not callable(cam):
            return
        with torch.no_grad():
            c_clean, c_adv = cam(x), cam(x_min)
        index, weights = isa_class_index(y, target, c_clean.shape[1], "two_class")
        gather = index[:, :, None, None].expand(-1, -1, *c_clean.shape[2:])
        d = isa_discrepancy(c_clean.gather(1, gather), c_adv.gather(1, gather), weights, "l1")
        pick = lambda z, c: z.gather(1, c[:, None]).squeeze(1)
        self.store["margin"].update(0.5 * (pick(clean_logits, y) - pick(clean_logits, target)))
        self.store["bound_d"].update(d / (c_clean.shape[2] * c_clean.shape[3]))
        self.store["min_success"].update((pick(adv_logits, target) >= pick(adv_logits, y)).float())
        self.store["min_eps"].update((x_min - x).flatten(1).abs().amax(1))

    def _keep_examples(self, x: Tensor, columns: dict[str, tuple[Tensor, Tensor | None]], y: Tensor,
                       target: Tensor) -> None:
        if self._examples is not None or self.grid_images <= 0:
            return
        n = self.grid_images
        self._examples = {"x": x[:n].detach(), "y": y[:n], "target": target[:n],
                          "columns": {k: v[0][:n].detach() for k, v in columns.items()}}

    # -- at the end -----------------------------------------------------------------------------------
    def _values(self, key: str) -> Tensor:
        metric = self.store[key]
        return metric.compute() if metric.update_count else torch.empty(0)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        prefix = f"test/isa/{self.name}"
        logged: dict[str, float] = {}
        success = self._values("success")
        logged["images"] = float(len(success))
        logged["success"] = float(success.mean()) if len(success) else float("nan")
        eps_adv = self._values("eps_adv")
        logged["eps_adv"] = float(eps_adv.mean()) if len(eps_adv) else float("nan")
        bound = bound_check(self._values("margin"), self._values("bound_d"), self._values("min_success"))
        if self.attack.mode == "min_eps":
            min_eps = self._values("min_eps")
            logged.update({"bound_holds": bound.holds, "bound_min_slack": bound.min_slack, "margin": bound.margin,
                           "bound_discrepancy": bound.discrepancy, "bound_images": float(bound.images),
                           "min_eps": float(min_eps.mean()) if len(min_eps) else float("nan")})
        else:
            logged["bound_holds"] = bound.holds
        curves: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        names = _point_names(self.attack)
        for variant in self.attack.variants if self.attack.mode != "min_eps" else ():
            sub = f"{variant}/" if self.attack.mode == "tradeoff" else ""
            v = {k: self._values(f"{variant}/{k}") for k in PER_POINT}
            if not len(v["d"]):
                continue
            valid = v["valid"].bool()
            summary = summarize(v["d"], v["eps"], valid, v["tau"], v["pearson"])
            for key in ("total_discrepancy", "nslope", "nslope_per_image", "kendall", "pearson"):
                logged[f"{sub}{key}"] = getattr(summary, key)
            logged[f"{sub}kept_images"], logged[f"{sub}points"] = float(summary.kept_images), float(summary.points)
            for j, point in enumerate(names):
                ok = valid[:, j]
                logged[f"{sub}curve/{point}"] = float(summary.curve[j])
                logged[f"{sub}eps/{point}"] = float(v["eps"][:, j].mean())
                logged[f"{sub}discrepancy/{point}"] = float(v["d"][ok, j].mean()) if ok.any() else float("nan")
                logged[f"{sub}raw_discrepancy/{point}"] = float(v["raw"][ok, j].mean()) if ok.any() else float("nan")
            plotted = v["raw"] if self.attack.mode == "tradeoff" else v["d"]  # the seed's tradeoff plots the raw D
            curves[variant] = (v["eps"], monotone_curve(plotted, valid)[0], valid)
        for key, value in logged.items():
            pl_module.log(f"{prefix}/{key}", torch.tensor(value, dtype=torch.float32), sync_dist=False)
        if trainer.is_global_zero:
            self._save_figures(trainer, pl_module, curves, bound)

    def _save_figures(self, trainer: L.Trainer, pl_module: L.LightningModule,
                      curves: dict[str, tuple[Tensor, Tensor, Tensor]], bound: Any) -> None:
        directory = (self.output_dir or Path(trainer.default_root_dir)) / "images"
        a = self.attack
        kind = type(a.attribution).__name__
        self.figures = []
        if curves:
            raw = a.mode == "tradeoff"
            label = ("raw attack-loss D" if raw else "normalised discrepancy") + \
                    f" ({a.discrepancy}{', squared' if a.discrepancy == 'l2' and raw else ''}, {kind})"
            self.figures.append(save_isa_curves(directory / f"{self.name}_curve.png", curves, label,
                                                f"{self.name}: {a!r}"))
        if a.mode == "min_eps":
            self.figures.append(save_bound_scatter(
                directory / f"{self.name}_bound.png", self._values("margin"), self._values("bound_d"),
                self._values("min_success"),
                f"{self.name}: bound holds on {bound.holds:.0%} of {bound.images} successful images"))
        if self._examples is not None:
            self.figures.append(self._save_overlays(directory / f"{self.name}_overlay.png", pl_module))
        self.grid_path = self.figures[0] if self.figures else None
        log_image_files(trainer.loggers, f"test/examples/{self.name}", self.figures,
                        [p.stem for p in self.figures])

    def _save_overlays(self, path: Path, pl_module: L.LightningModule) -> Path:
        ex = self._examples
        assert ex is not None
        model = pl_module.model
        index = ex["y"][:, None]
        with torch.no_grad():
            columns = {"clean, true-class map": (ex["x"], self.attack.logits_and_maps(model, ex["x"], index)[1][:, 0])}
            for heading, images in ex["columns"].items():
                columns[heading] = (images, self.attack.logits_and_maps(model, images, index)[1][:, 0])
        return save_isa_overlays(path, ex["x"], columns,
                                 f"{self.name}: true-class map before / after (target classes "
                                 f"{', '.join(str(int(t)) for t in ex['target'])})")


__all__ = ["ISAEvaluation"]
