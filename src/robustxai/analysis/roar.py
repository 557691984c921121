"""``study=roar`` / ``study=kar``: remove-and-retrain and keep-and-retrain over a grid of trained networks.

Kim et al. 2019 section 3.2 (spec sections 4.1-4.6): for every trained network of a grid, rank the
pixels of every training and test image by an attribution of that network (:mod:`.occlusion`),
replace the top (ROAR) or the bottom (KAR) pixels by the per-channel training mean, retrain a
*fresh* network from scratch on the occluded training set (the framework's ``NaturalTraining``
under a Lightning ``Trainer``; or, ``batched=true``, many retrainings at once as one stacked
``torch.func`` model), measure its accuracy on the equally occluded test set, average over
``repeats``, and turn each accuracy curve into the interpretability score against the random
baseline's curve (:mod:`.interpretability_score`). Over the grid, the score is correlated (Pearson,
Spearman) with each network's training eps and clean test accuracy, with fitted lines in the plots.

The work splits into three stages so a Hydra multirun can spread the retrainings
(``study.stage``): ``occlude`` (attributions of every network, written to ``work_dir``),
``retrain`` (the retraining units of shard ``shard`` of ``num_shards``; one JSON per unit, skipped
when already there, so a killed job resumes), ``score`` (gathers every unit: tables, plots,
correlations). ``stage=all`` runs the three in one process. The random baseline does not depend on
any network, so it is one curve (the seed computes it for the standard network only and reuses it).
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import os
import re
import time
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
import yaml
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from tqdm.auto import tqdm

from robustxai.analysis.interpretability_score import (
    correlations,
    interpretability_score,
    linear_fit,
    occlusion_curve,
)
from robustxai.analysis.manifold_distance import (
    build_network,
    load_network,
    run_model_config,
)
from robustxai.analysis.occlusion import (
    AttributionRanker,
    channel_mean,
    occlude,
    occlusion_mask,
    random_mask,
    tie_break,
)
from robustxai.analysis.toy_boundary import _quiet_lightning
from robustxai.data.base import TensorDataModule
from robustxai.data.order import epoch_order
from robustxai.methods.base import ClassifierModule
from robustxai.utils.validation import check_range

log = logging.getLogger("robustxai")
Stage = Literal["all", "occlude", "retrain", "score"]
RANDOM = "random"


def stable_seed(*parts: Any) -> int:
    """A seed from the parts' text (crc32): the same in every process, unlike ``hash``."""
    return zlib.crc32("/".join(str(p) for p in parts).encode())


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", str(name)).strip("_") or "x"


# -- the grid of trained networks ---------------------------------------------------------------------
@dataclass
class GridModel:
    """One trained network of the grid: name, checkpoint, training eps, series (e.g. the norm) and model node."""

    name: str
    ckpt_path: str
    eps: float = 0.0
    group: str | None = None
    model: Any = None


def models_from_multirun(directory: str | Path) -> list[GridModel]:
    """The jobs of a training multirun (``<dir>/<job>/checkpoints/last.ckpt`` + ``config.yaml``) as grid entries.

    eps is ``method.attack.eps`` of the job's config (0 for a method without an attack), the group its
    ``method.attack.norm``, the name the job's overrides that differ between the jobs (or its folder name).
    """
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"`models_dir`: {root} is not a directory (a training multirun's sweep directory)")
    out, labels = [], []
    for job in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name)):
        ckpt = job / "checkpoints" / "last.ckpt"
        config = next((c for c in (job / "config.yaml", job / ".hydra" / "config.yaml") if c.is_file()), None)
        if not ckpt.is_file() or config is None:
            continue
        cfg = OmegaConf.load(config)
        attack = OmegaConf.select(cfg, "method.attack", default=None)
        eps = float(attack.get("eps", 0.0)) if attack is not None else 0.0
        group = str(attack.get("norm")) if attack is not None and attack.get("norm") is not None else None
        overrides = job / ".hydra" / "overrides.yaml"
        labels.append([str(i) for i in yaml.safe_load(overrides.read_text()) or []] if overrides.is_file() else [])
        out.append(GridModel(name=job.name, ckpt_path=str(ckpt), eps=eps, group=group if eps > 0 else None))
    if not out:
        raise ValueError(f"`models_dir`: no <job>/checkpoints/last.ckpt with a config.yaml under {root}")
    shared = set.intersection(*(set(items) for items in labels)) if len(labels) > 1 else set()
    for entry, items in zip(out, labels):  # name a job by the overrides that tell it apart (the swept keys)
        entry.name = " ".join(i for i in items if i not in shared) or entry.name
    return out


def _grid(models: Sequence[Mapping[str, Any]] | None, models_dir: str | None) -> list[GridModel]:
    if (models is None) == (models_dir is None):
        raise ValueError("give exactly one of `models` (a list of {name, ckpt_path, eps, group, model}) and "
                         "`models_dir` (a training multirun directory)")
    if models_dir is not None:
        grid = models_from_multirun(models_dir)
    else:
        grid = []
        for i, entry in enumerate(models):
            entry = dict(entry)
            unknown = set(entry) - {"name", "ckpt_path", "eps", "group", "model"}
            if unknown or "name" not in entry or "ckpt_path" not in entry:
                raise ValueError(f"`models[{i}]` needs name and ckpt_path (optional: eps, group, model), "
                                 f"got keys {sorted(entry)}")
            grid.append(GridModel(name=str(entry["name"]), ckpt_path=str(entry["ckpt_path"]),
                                  eps=float(entry.get("eps") or 0.0),
                                  group=None if entry.get("group") is None else str(entry["group"]),
                                  model=entry.get("model")))
    names = [m.name for m in grid]
    if len(set(names)) != len(names) or RANDOM in names:
        raise ValueError(f"`models`: names must be distinct and not {RANDOM!r}, got {names}")
    return grid


# -- retraining ---------------------------------------------------------------------------------------
class RetrainData(TensorDataModule):
    """Given (occluded) training images as a data module: the framework's tensor loader, no validation split."""

    def __init__(self, images: Tensor, labels: Tensor, num_classes: int, batch_size: int, shuffle_seed: int) -> None:
        super().__init__(batch_size=batch_size, val_size=0, shuffle_seed=shuffle_seed, download=False)
        self._images, self._labels = images, labels
        self.num_classes = int(num_classes)
        self.input_shape = tuple(images.shape[1:])

    def load(self, train: bool) -> tuple[Tensor, Tensor]:
        return (self._images, self._labels) if train else (self._images[:0], self._labels[:0])


def retrain_lightning(make_model: Callable[[], nn.Module], make_method: Callable[..., ClassifierModule],
                      x: Tensor, y: Tensor, num_classes: int, seed: int, epochs: int, max_steps: int | None,
                      batch_size: int, accelerator: str = "cpu") -> nn.Module:
    """A fresh network (``seed_everything(seed)`` then ``make_model()``) trained by the method on (x, y)."""
    L.seed_everything(seed, workers=True, verbose=False)
    model = make_model()
    method = make_method(model=model)
    data = RetrainData(x, y, num_classes, batch_size, shuffle_seed=seed)
    with _quiet_lightning(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*")  # Lightning 2.6 on torch 2.14, once per step
        trainer = L.Trainer(max_epochs=epochs, max_steps=max_steps if max_steps is not None else -1,
                            accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                            enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0,
                            limit_val_batches=0)
        trainer.fit(method, datamodule=data)
    return model.eval()


def _batches(n: int, batch_size: int, seeds: Sequence[int], epochs: int, max_steps: int | None):
    """Per step, the (B, batch) positions each model reads: the tensor loader's order (seed + epoch)."""
    steps = 0
    for epoch in range(epochs):
        orders = torch.stack([epoch_order(n, True, s, epoch, equal_shards=True) for s in seeds])
        for start in range(0, n, batch_size):
            if max_steps is not None and steps >= max_steps:
                return
            yield orders[:, start:start + batch_size]
            steps += 1


def retrain_stacked(make_model: Callable[[], nn.Module], optimizer: Callable[..., torch.optim.Optimizer],
                    datasets: Sequence[tuple[Tensor, Tensor]], seeds: Sequence[int], epochs: int,
                    max_steps: int | None, batch_size: int, progress: bool = False) -> list[nn.Module]:
    """Train len(datasets) fresh networks at once: ``stack_module_state`` + ``vmap(functional_call)``, one optimiser.

    Network i starts from ``seed_everything(seeds[i]); make_model()`` and reads dataset i in the
    order of the tensor loader with shuffle seed ``seeds[i]``, so each equals its sequential
    :func:`retrain_lightning` run (the summed loss gives every network its own gradient, and the
    optimiser must act elementwise, as Adam and SGD do). All datasets must have the same length.
    One dataset runs the plain loop (the same order and updates, without ``vmap``).
    """
    if not datasets or len(datasets) != len(seeds):
        raise ValueError(f"one seed per dataset, got {len(datasets)} datasets and {len(seeds)} seeds")
    n = len(datasets[0][1])
    if any(len(y) != n for _, y in datasets):
        raise ValueError("stacked retraining needs datasets of one length")
    from torch.func import functional_call, stack_module_state, vmap

    models = []
    for s in seeds:
        L.seed_everything(int(s), workers=True, verbose=False)
        models.append(make_model().train())
    total = epochs * math.ceil(n / batch_size) if max_steps is None else min(max_steps, epochs * math.ceil(n / batch_size))
    if len(models) == 1:  # one network: the plain loop (no stacking, no vmap)
        (model,), (x, y) = models, datasets[0]
        opt = optimizer(params=model.parameters())
        for idx in tqdm(_batches(n, batch_size, seeds, epochs, max_steps), total=total, desc="retrain",
                        leave=False, disable=not progress):
            i = idx[0].to(x.device)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[i]), y[i.to(y.device)]).backward()
            opt.step()
        return [model.eval()]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def loss_of(p: dict[str, Tensor], b: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    losses = vmap(loss_of)
    opt = optimizer(params=list(params.values()))
    xs, ys = [d[0] for d in datasets], [d[1] for d in datasets]
    for idx in tqdm(_batches(n, batch_size, seeds, epochs, max_steps), total=total, desc="stacked retrain",
                    leave=False, disable=not progress):
        xb = torch.stack([x[i.to(x.device)] for x, i in zip(xs, idx)])
        yb = torch.stack([y[i.to(y.device)] for y, i in zip(ys, idx)])
        opt.zero_grad(set_to_none=True)
        losses(params, buffers, xb, yb).sum().backward()
        opt.step()
    with torch.no_grad():
        for i, model in enumerate(models):
            for name, p in model.named_parameters():
                p.copy_(params[name][i])
            for name, b in model.named_buffers():
                b.copy_(buffers[name][i])
    return [m.eval() for m in models]


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on (x, y), in batches."""
    correct = torch.zeros((), dtype=torch.long, device=y.device)
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        correct += (model(xb).argmax(dim=1) == yb).sum()
    return float(correct) / len(y)


# -- the units of work ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    """One retraining: ``kind`` clean (0 % occluded), full (100 %), random or attribution; repeat ``repeat``."""

    kind: str
    fraction: float
    repeat: int
    model: str = ""
    method: str = ""

    @property
    def key(self) -> str:
        where = f"{_slug(self.model)}__{_slug(self.method)}_" if self.kind == "attribution" else ""
        return f"{self.kind}_{where}p{self.fraction:g}_r{self.repeat}"


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def _instantiate(obj: Any) -> Any:
    import hydra

    if isinstance(obj, (Mapping, DictConfig)) and "_target_" in obj:
        return hydra.utils.instantiate(obj)
    return obj


class OcclusionStudy:
    """ROAR or KAR (``experiment``) over a grid of trained networks, with the interpretability score.

    ``models``: ``[{name, ckpt_path, eps, group (optional: the series, e.g. l2 / linf; eps-0
    networks join every series), model (optional node when the checkpoint has no run config)}]``,
    or ``models_dir``: a training multirun directory. ``attributions``: name -> attribution object
    (``conf/attribution/``). ``fractions``: removed (ROAR) or kept (KAR) shares, strictly between 0
    and 1. ``start``/``end``: the curves' endpoints; None / ``measured`` retrain on un-occluded /
    fully occluded data and use the measured accuracy, ``chance`` is 1 / classes, a number is used
    as given (the seed: 0.7366 and 0.1). ``retrain_model``: a partial building the fresh network
    (None: the first grid network's architecture); ``method``: a training-method partial
    (``NaturalTraining`` with its optimiser). See the module docstring for ``stage``.
    """

    def __init__(self, data: Any, attributions: Mapping[str, Any], method: Callable[..., ClassifierModule],
                 experiment: Literal["roar", "kar"] = "roar", models: Sequence[Mapping[str, Any]] | None = None,
                 models_dir: str | None = None, fractions: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
                 repeats: int = 3, target: Literal["loss", "logit"] = "loss", seed_units: bool = True,
                 noise: float = 1e-8, rule: Literal["rank", "percentile"] = "rank",
                 random_rule: Literal["bernoulli", "exact"] = "bernoulli", random_baseline: bool = True,
                 start: float | None = None, end: Literal["chance", "measured"] | float = "chance",
                 retrain_model: Callable[..., nn.Module] | None = None, epochs: int = 20,
                 max_steps: int | None = None, batch_size: int = 100, train_subset: int | None = None,
                 batched: bool = False, group_size: int = 8, stage: Stage = "all", work_dir: str | None = None,
                 shard: int = 0, num_shards: int = 1, attribution_batch_size: int = 500,
                 eval_batch_size: int = 1000, keep_maps: bool = False, seed: int = 0, device: str = "auto",
                 progress: bool = True) -> None:
        if experiment not in ("roar", "kar"):
            raise ValueError(f"experiment must be 'roar' or 'kar', got {experiment!r}")
        if not attributions:
            raise ValueError("attributions must name at least one attribution, e.g. "
                             "{saliency: ..., input_x_gradient: ...} (conf/attribution/)")
        bad = [n for n in attributions if n == RANDOM]
        if bad:
            raise ValueError(f"attributions: {RANDOM!r} is the random baseline's name; rename that attribution")
        fractions = [float(f) for f in fractions]
        if not fractions or any(not 0.0 < f < 1.0 for f in fractions) or len(set(fractions)) != len(fractions):
            raise ValueError(f"fractions must be distinct values strictly between 0 and 1 (0 and 1 are the "
                             f"curves' endpoints), got {fractions}")
        check_range("repeats", repeats, low=1)
        check_range("epochs", epochs, low=1)
        if max_steps is not None:
            check_range("max_steps", max_steps, low=1)
        check_range("batch_size", batch_size, low=1)
        check_range("group_size", group_size, low=1)
        check_range("num_shards", num_shards, low=1)
        check_range("shard", shard, low=0, high=num_shards - 1)
        if train_subset is not None:
            check_range("train_subset", train_subset, low=1)
        if start is not None:
            check_range("start", start, low=0.0, high=1.0)
        if isinstance(end, str) and end not in ("chance", "measured"):
            raise ValueError(f"end must be 'chance', 'measured' or a number in [0, 1], got {end!r}")
        if not isinstance(end, str):
            check_range("end", end, low=0.0, high=1.0)
        if stage not in ("all", "occlude", "retrain", "score"):
            raise ValueError(f"stage must be one of 'all', 'occlude', 'retrain', 'score', got {stage!r}")
        if stage != "all" and work_dir is None:
            raise ValueError(f"stage={stage!r} needs work_dir=<a folder shared by the stages> (stage=all uses "
                             f"the run directory)")
        if device not in ("auto", "cpu") and not str(device).startswith("cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}")
        self.grid = _grid(models, models_dir)
        self.data, self.method = data, method
        self.attributions = {str(k): v for k, v in attributions.items()}
        self.experiment, self.fractions, self.repeats = experiment, sorted(fractions), int(repeats)
        self.ranker_args = {"target": target, "seed_units": seed_units, "batch_size": attribution_batch_size}
        self.noise, self.rule, self.random_rule, self.random_baseline = float(noise), rule, random_rule, random_baseline
        self.start, self.end = start, end
        self.retrain_model = retrain_model
        self.epochs, self.max_steps, self.batch_size = int(epochs), max_steps, int(batch_size)
        self.train_subset = train_subset
        self.batched, self.group_size = batched, int(group_size)
        self.stage, self.work_dir = stage, work_dir
        self.shard, self.num_shards = int(shard), int(num_shards)
        self.eval_batch_size, self.keep_maps = int(eval_batch_size), keep_maps
        self.seed, self.progress = int(seed), progress
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self._splits: dict[str, tuple[Tensor, Tensor]] | None = None

    # -- data ---------------------------------------------------------------------------------------
    def splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        """The training (first ``train_subset``) and test images in [0, 1] on the device, and labels."""
        if self._splits is None:
            data = _instantiate(self.data)
            data.setup()
            self.data = data
            out = {}
            for split in ("train", "test"):
                n = data.split_size(split)
                if split == "train" and self.train_subset is not None:
                    n = min(n, self.train_subset)
                x, y = data.take(split, range(n))
                out[split] = (x.to(self.device), y.to(self.device))
            self._splits = out
        return self._splits

    @property
    def num_classes(self) -> int:
        self.splits()
        return int(self.data.num_classes)

    def _root(self, output_dir: Path) -> Path:
        return Path(self.work_dir) if self.work_dir is not None else output_dir

    def plan(self) -> dict[str, Any]:
        """The settings every stage must share (checked against the occlude stage's ``plan.json``)."""
        return {"experiment": self.experiment, "models": [m.name for m in self.grid],
                "attributions": sorted(self.attributions), "fractions": self.fractions, "repeats": self.repeats,
                "train_subset": self.train_subset, "rule": self.rule, "noise": self.noise, "seed": self.seed,
                "ranker": self.ranker_args}

    def units(self) -> list[Unit]:
        """Every retraining of the study: 0 % (and 100 % when measured), random baseline, attribution curves."""
        out = []
        for r in range(self.repeats):
            if self.start is None:
                out.append(Unit("clean", 0.0, r))
            if self.end == "measured":
                out.append(Unit("full", 1.0, r))
            if self.random_baseline:
                out += [Unit(RANDOM, f, r) for f in self.fractions]
            out += [Unit("attribution", f, r, m.name, a) for m in self.grid for a in self.attributions
                    for f in self.fractions]
        return out

    # -- stage 1: attributions ----------------------------------------------------------------------
    def _make_retrain_model(self) -> Callable[[], nn.Module]:
        x, _ = self.splits()["train"]
        shape, classes = tuple(x.shape[1:]), self.num_classes
        if self.retrain_model is not None:
            factory = self.retrain_model
            implied = self.data.model_kwargs()

            def make() -> nn.Module:
                import inspect

                target = factory.func if hasattr(factory, "func") else factory
                params = inspect.signature(target).parameters
                return factory(**{k: v for k, v in implied.items() if k in params and k not in
                                  getattr(factory, "keywords", {})}).to(self.device)
            return make
        first = self.grid[0]
        node = first.model if first.model is not None else run_model_config(Path(first.ckpt_path))
        if node is None:
            raise ValueError(f"`retrain_model` is null and {first.ckpt_path} has no run config.yaml: give "
                             f"study.retrain_model (a model partial, e.g. {{_target_: robustxai.models.SmallCNN, "
                             f"_partial_: true}})")
        if isinstance(node, nn.Module):  # a built network: copy it and re-draw its layers' default init
            log.warning("%s: the fresh networks are copies of models[0].model with PyTorch's default layer init; "
                        "give study.retrain_model (a partial) for the architecture's own init", self.experiment)
            template = node

            def make_copy() -> nn.Module:
                fresh = copy.deepcopy(template).train()
                for module in fresh.modules():
                    if hasattr(module, "reset_parameters"):
                        module.reset_parameters()
                for p in fresh.parameters():
                    p.requires_grad_(True)
                return fresh.to(self.device)
            return make_copy
        return lambda: build_network(node, shape[0], classes, shape[1]).to(self.device)

    def occlude_stage(self, root: Path) -> dict[str, float]:
        """Clean accuracy and ranking maps (train and test) of every grid network, the training mean, ``plan.json``."""
        splits = self.splits()
        (x_tr, _), (x_te, y_te) = splits["train"], splits["test"]
        _write_json(root / "plan.json", self.plan())
        torch.save(channel_mean(x_tr).cpu(), root / "mean.pt")
        info = []
        bar = tqdm(self.grid, desc=f"{self.experiment}: attributions", disable=not self.progress)
        for entry in bar:
            net = load_network(entry.ckpt_path, entry.model, tuple(x_te.shape[1:]), self.num_classes,
                               f"models[{entry.name}]").to(self.device)
            clean = accuracy(net, x_te, y_te, self.eval_batch_size)
            info.append({**{k: v for k, v in asdict(entry).items() if k != "model"}, "clean_acc": clean})
            for name, attribution in self.attributions.items():
                path = root / "maps" / _slug(entry.name) / f"{_slug(name)}.pt"
                if path.is_file():
                    continue
                bar.set_postfix_str(f"{entry.name} {name}")
                ranker = AttributionRanker(attribution, **self.ranker_args)
                maps = {split: ranker(net, x).cpu() for split, x in (("train", x_tr), ("test", x_te))}
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(maps, path.with_suffix(".tmp"))
                os.replace(path.with_suffix(".tmp"), path)
        _write_json(root / "models.json", {"models": info})
        return {f"test/clean_acc/{m['name']}": m["clean_acc"] for m in info}

    # -- stage 2: retraining ------------------------------------------------------------------------
    def _check_plan(self, root: Path) -> None:
        path = root / "plan.json"
        if not path.is_file():
            raise ValueError(f"`work_dir`: {root} has no plan.json; run study.stage=occlude with this work_dir first")
        saved = json.loads(path.read_text())
        mine = json.loads(json.dumps(self.plan()))
        diff = [k for k in mine if saved.get(k) != mine[k]]
        if diff:
            raise ValueError(f"`work_dir`: {root} was occluded with other settings ({', '.join(diff)}: "
                             f"{[saved.get(k) for k in diff]} vs {[mine[k] for k in diff]}); use the same study "
                             f"settings in every stage or another work_dir")

    def occluded(self, root: Path, unit: Unit, split: str) -> Tensor:
        """The images of ``split`` occluded as ``unit`` says (a new tensor)."""
        x, _ = self.splits()[split]
        mean = torch.load(root / "mean.pt", weights_only=True).to(x.device)
        shape = (x.shape[0], x.shape[2], x.shape[3])
        if unit.kind == "clean":
            return x
        if unit.kind == "full":
            mask = torch.ones(shape, dtype=torch.bool, device=x.device)
        elif unit.kind == RANDOM:
            mask = random_mask(shape, unit.fraction, self.experiment, stable_seed("random", self.seed, split,
                               unit.fraction), self.random_rule, x.device)
        else:
            maps = torch.load(root / "maps" / _slug(unit.model) / f"{_slug(unit.method)}.pt", weights_only=True)[split]
            scores = tie_break(maps, self.noise, stable_seed("ties", self.seed, unit.model, unit.method, split))
            mask = occlusion_mask(scores.to(x.device), unit.fraction, self.experiment, self.rule)
        return occlude(x, mask, mean)

    def _optimizer(self) -> Callable[..., torch.optim.Optimizer]:
        """The method partial's optimiser factory (the stacked loop builds one optimiser over every network)."""
        from robustxai.methods.natural import NaturalTraining

        func = getattr(self.method, "func", None)
        if not (isinstance(func, type) and issubclass(func, NaturalTraining)):
            raise ValueError(  # noqa: TRY004  (a config value: ValueError, as every check here)
                "batched=true trains with cross-entropy on clean inputs, i.e. `method` must be a "
                f"NaturalTraining partial, got {func or self.method!r}; use batched=false for other methods")
        factory = getattr(self.method, "keywords", {}).get("optimizer")
        if factory is None:
            raise ValueError("batched=true needs `method` to be a partial with an `optimizer` (e.g. NaturalTraining "
                             "with /method/optimizer@method.optimizer: adam)")
        return factory

    def _retrain_seed(self, repeat: int) -> int:
        return self.seed + 1000 * (repeat + 1)

    def retrain_stage(self, root: Path) -> dict[str, float]:
        """Retrain this shard's units that have no result yet; one ``units/<key>.json`` each."""
        self._check_plan(root)
        splits = self.splits()
        y_tr, y_te = splits["train"][1], splits["test"][1]
        todo = [u for i, u in enumerate(self.units()) if i % self.num_shards == self.shard
                and not (root / "units" / f"{u.key}.json").is_file()]
        make_model = self._make_retrain_model()
        groups = [todo[i:i + self.group_size] for i in range(0, len(todo), self.group_size)] if self.batched \
            else [[u] for u in todo]
        bar = tqdm(total=len(todo), desc=f"{self.experiment}: retrain", disable=not self.progress)
        for group in groups:
            started = time.perf_counter()
            trains = [self.occluded(root, u, "train") for u in group]
            seeds = [self._retrain_seed(u.repeat) for u in group]
            if self.batched:
                nets = retrain_stacked(make_model, self._optimizer(), [(x, y_tr) for x in trains], seeds, self.epochs,
                                       self.max_steps, self.batch_size)
            else:
                nets = [retrain_lightning(make_model, self.method, trains[0], y_tr, self.num_classes, seeds[0],
                                          self.epochs, self.max_steps, self.batch_size,
                                          "gpu" if self.device.type == "cuda" else "cpu")]
            seconds = (time.perf_counter() - started) / len(group)
            for unit, net in zip(group, nets):
                acc = accuracy(net, self.occluded(root, unit, "test"), y_te, self.eval_batch_size)
                _write_json(root / "units" / f"{unit.key}.json", {**asdict(unit), "acc": acc, "seconds": seconds})
                bar.update(1)
        bar.close()
        return {"retrain/units_done": float(len(todo)), "retrain/units_total": float(len(self.units()))}

    # -- stage 3: scores ----------------------------------------------------------------------------
    def score_stage(self, root: Path, output_dir: Path) -> dict[str, float]:
        """Gather every unit: curves, scores, correlations; tables (md, csv) and figures."""
        self._check_plan(root)
        results: dict[Unit, float] = {}
        missing = []
        for u in self.units():
            path = root / "units" / f"{u.key}.json"
            if path.is_file():
                results[u] = float(json.loads(path.read_text())["acc"])
            else:
                missing.append(u.key)
        if missing:
            raise ValueError(f"`work_dir`: {len(missing)} retrainings have no result yet ({', '.join(missing[:4])}"
                             f"{', ...' if len(missing) > 4 else ''}); run study.stage=retrain first")
        info = {m["name"]: m for m in json.loads((root / "models.json").read_text())["models"]}

        def mean_acc(kind: str, fraction: float, model: str = "", method: str = "") -> float:
            values = [results[Unit(kind, fraction, r, model, method)] for r in range(self.repeats)]
            return sum(values) / len(values)

        start = mean_acc("clean", 0.0) if self.start is None else float(self.start)
        end = {"chance": 1.0 / self.num_classes, "measured": None}.get(self.end, self.end) if isinstance(self.end, str) \
            else float(self.end)
        if end is None:
            end = mean_acc("full", 1.0)
        baseline = [mean_acc(RANDOM, f) for f in self.fractions] if self.random_baseline else None
        if baseline is None:
            raise ValueError("random_baseline=false leaves no baseline curve to score against")
        out: dict[str, float] = {"test/endpoint/start": start, "test/endpoint/end": end}
        for f, b in zip(self.fractions, baseline):
            out[f"test/retrain_acc/{RANDOM}/p{f:g}"] = b
        rows = []
        for entry in self.grid:
            row: dict[str, Any] = {"model": entry.name, "eps": entry.eps, "group": entry.group or "",
                                   "clean_acc": info[entry.name]["clean_acc"]}
            out[f"test/clean_acc/{entry.name}"] = row["clean_acc"]
            for a in self.attributions:
                accs = [mean_acc("attribution", f, entry.name, a) for f in self.fractions]
                score = interpretability_score(self.experiment, self.fractions, accs, baseline, start, end)
                row[f"score/{a}"] = score
                out[f"test/score/{a}/{entry.name}"] = score
                for f, acc in zip(self.fractions, accs):
                    row[f"acc/{a}/p{f:g}"] = acc
                    out[f"test/retrain_acc/{a}/{entry.name}/p{f:g}"] = acc
            rows.append(row)
        corr_rows = self.correlation_rows(rows)
        for c in corr_rows:
            for stat in ("pearson_eps", "spearman_eps", "pearson_acc", "spearman_acc"):
                out[f"test/{stat}/{c['attribution']}/{c['series']}"] = c[stat]
        self.write_tables(output_dir, rows, corr_rows, baseline, start, end)
        self.plot_scores(output_dir / f"{self.experiment}_scores.png", rows, corr_rows)
        self.plot_curves(output_dir / f"{self.experiment}_curves.png", rows, baseline, start, end)
        return out

    def series(self, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """``all`` (every network) and, with two or more groups, one series per group plus the eps-0 networks."""
        groups = sorted({r["group"] for r in rows if r["group"]})
        out = {"all": rows}
        if len(groups) >= 2:
            for g in groups:
                out[g] = [r for r in rows if r["group"] == g or (not r["group"] and r["eps"] == 0)]
        return out

    def correlation_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Pearson and Spearman of the score with the training eps and with the clean accuracy, per series."""
        out = []
        nan = float("nan")
        for a in self.attributions:
            for name, members in self.series(rows).items():
                scores = [r[f"score/{a}"] for r in members]
                row = {"attribution": a, "series": name, "n": len(members)}
                for axis, key in (("eps", "eps"), ("acc", "clean_acc")):
                    xs = [float(r[key]) for r in members]
                    p, s = correlations(xs, scores) if len(members) >= 2 else (nan, nan)
                    slope, intercept = linear_fit(xs, scores) if len(members) >= 2 else (nan, nan)
                    row.update({f"pearson_{axis}": p, f"spearman_{axis}": s, f"slope_{axis}": slope,
                                f"intercept_{axis}": intercept})
                out.append(row)
        return out

    def write_tables(self, output_dir: Path, rows: list[dict[str, Any]], corr: list[dict[str, Any]],
                     baseline: list[float], start: float, end: float) -> None:
        """``<experiment>_scores.{md,csv}`` (per network) and ``<experiment>_correlations.{md,csv}``."""
        output_dir.mkdir(parents=True, exist_ok=True)
        exp = self.experiment
        columns = list(rows[0])
        with open(output_dir / f"{exp}_scores.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

        def fmt(v: Any) -> str:
            return f"{v:.4f}" if isinstance(v, float) else str(v)

        what = "removed" if exp == "roar" else "kept"
        lines = [(f"{exp.upper()}: accuracy of networks retrained on occluded data (fraction p {what}), "
                  f"mean of {self.repeats} repeats; score = area between the curve and the random baseline's "
                  f"(endpoints: {start:.4f} at 0 % removed, {end:.4f} at 100 %)."), "",
                 "random baseline: " + ", ".join(f"p={p:g}: {b:.4f}" for p, b in zip(self.fractions, baseline)),
                 "",
                 "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(fmt(r[c]) for c in columns) + " |" for r in rows]
        (output_dir / f"{exp}_scores.md").write_text("\n".join(lines) + "\n")
        ccols = list(corr[0])
        with open(output_dir / f"{exp}_correlations.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=ccols)
            writer.writeheader()
            writer.writerows(corr)
        lines = ["| " + " | ".join(ccols) + " |", "|" + "---|" * len(ccols)]
        lines += ["| " + " | ".join(fmt(r[c]) for c in ccols) + " |" for r in corr]
        (output_dir / f"{exp}_correlations.md").write_text("\n".join(lines) + "\n")

    def plot_scores(self, path: Path, rows: list[dict[str, Any]], corr: list[dict[str, Any]]) -> None:
        """Score against training eps and against clean accuracy: points, dashed fitted lines, r and rho in the legend."""
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        series = self.series(rows)
        names = [n for n in series if n != "all"] or ["all"]
        for ax, (axis, key, label) in zip(axes, (("eps", "eps", "training eps"),
                                                 ("acc", "clean_acc", "clean test accuracy"))):
            for a in self.attributions:
                for name in names:
                    members = series[name]
                    c = next(c for c in corr if c["attribution"] == a and c["series"] == name)
                    xs = [float(r[key]) for r in members]
                    ys = [r[f"score/{a}"] for r in members]
                    tag = a if name == "all" else f"{name} {a}"
                    points = ax.scatter(xs, ys, s=18)
                    if len(xs) >= 2 and c[f"slope_{axis}"] == c[f"slope_{axis}"]:
                        lo, hi = min(xs), max(xs)
                        ax.plot([lo, hi], [c[f"intercept_{axis}"] + c[f"slope_{axis}"] * v for v in (lo, hi)], "--",
                                color=points.get_facecolor()[0])
                    points.set_label(f"{tag} (r={c[f'pearson_{axis}']:.3f}, rho={c[f'spearman_{axis}']:.3f})")
            ax.set_xlabel(label)
            ax.set_ylabel(f"{self.experiment.upper()} score")
            ax.axhline(0.0, color="0.7", lw=0.8)
            ax.legend(fontsize=7)
        fig.suptitle(f"{self.experiment.upper()} interpretability score", fontsize=11)
        fig.tight_layout()
        fig.savefig(path, dpi=130)
        plt.close(fig)

    def plot_curves(self, path: Path, rows: list[dict[str, Any]], baseline: list[float], start: float,
                    end: float) -> None:
        """Accuracy against the fraction removed, one panel per attribution, every network and the random baseline."""
        n = len(self.attributions)
        fig, axes = plt.subplots(1, n, figsize=(5 * n, 3.8), squeeze=False)
        x_b, v_b = occlusion_curve(self.experiment, self.fractions, baseline, start, end)
        for ax, a in zip(axes[0], self.attributions):
            for r in rows:
                x, v = occlusion_curve(self.experiment, self.fractions,
                                       [r[f"acc/{a}/p{f:g}"] for f in self.fractions], start, end)
                ax.plot(x.numpy(), v.numpy(), marker="o", ms=3, lw=1, label=f"{r['model']} (eps {r['eps']:g})")
            ax.plot(x_b.numpy(), v_b.numpy(), "k--", lw=1.5, label="random")
            ax.set_xlabel("fraction of pixels removed")
            ax.set_ylabel("retrained test accuracy")
            ax.set_title(f"{self.experiment.upper()} {a}", fontsize=10)
            ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(path, dpi=130)
        plt.close(fig)

    # -- the whole study ----------------------------------------------------------------------------
    def run(self, output_dir: Path) -> dict[str, float]:
        """Run ``stage`` (all: occlude, retrain and score in this process); return the scalars."""
        output_dir = Path(output_dir)
        root = self._root(output_dir)
        root.mkdir(parents=True, exist_ok=True)
        out: dict[str, float] = {}
        if self.stage in ("all", "occlude"):
            out.update(self.occlude_stage(root))
        if self.stage in ("all", "retrain"):
            out.update(self.retrain_stage(root))
        if self.stage in ("all", "score"):
            out.update(self.score_stage(root, output_dir))
            if self.stage == "all" and not self.keep_maps:
                for p in sorted((root / "maps").rglob("*.pt")):
                    p.unlink()
        return out


__all__ = ["GridModel", "OcclusionStudy", "RetrainData", "Unit", "accuracy", "models_from_multirun",
           "retrain_lightning", "retrain_stacked", "stable_seed"]
