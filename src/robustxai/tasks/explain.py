"""The explain task (Woods et al. ``explain``, spec section 4): g_explain+ adversarial explanations as PNGs.

``python src/eval.py task=explain model=woods_resnet44 model.weights=<seed file> data=cifar10``
writes, per chosen test image ``i``, the folder ``explanations/{i}-{class}/`` with ``_input.png``,
``_real_was_{p}.png``, ``_second_{class}_was_{p}.png`` and ``{k}_{class}_was_{p}.png`` for every
class (p: clean softmax probability, 3 decimals), named and scaled as the seed writes them, plus
``explanations/{i}-{class}.png``, a labelled grid of all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig
from torchvision.utils import save_image

from robustxai.analysis.explanations import save_explanation_grid
from robustxai.analysis.woods_explanations import ExplainSettings, Explanation, explain_images, explain_toward
from robustxai.errors import ConfigError
from robustxai.tasks.common import (
    build_components,
    build_datamodule,
    build_model,
    log,
    prepare,
    task_context,
    write_results,
)
from robustxai.utils.checkpoint import load_model_weights
from robustxai.utils.config import instantiate
from robustxai.utils.wandb import log_image_files


def seed_file_names(e: Explanation, class_names: Sequence[str]) -> list[str]:
    """The seed's names for targets [y, second, 0..C-1] (p with 3 decimals)."""
    p = e.probs
    names = [f"_real_was_{p[e.label]:.3f}.png", f"_second_{class_names[e.second]}_was_{p[e.second]:.3f}.png"]
    return names + [f"{k}_{class_names[k]}_was_{p[k]:.3f}.png" for k in range(len(p))]


def write_explanation(e: Explanation, directory: Path, class_names: Sequence[str], grid: bool = True) -> list[Path]:
    """Save the seed's PNGs (torchvision ``save_image``: round(255 v) clipped, no rescaling) and a grid."""
    folder = directory / f"{e.index}-{class_names[e.label]}"
    folder.mkdir(parents=True, exist_ok=True)
    save_image(e.image.clone(), folder / "_input.png")
    paths = []
    for name, tensor in zip(seed_file_names(e, class_names), e.explanations):
        save_image(tensor, folder / name)
        paths.append(folder / name)
    if grid:
        titles = [f"real {class_names[e.label]}", f"2nd {class_names[e.second]}"] + \
                 [f"{class_names[k]} {e.probs[k]:.3f}" for k in range(len(e.probs))]
        paths.append(save_explanation_grid(directory / f"{folder.name}.png", e.image, list(e.explanations), titles,
                                           suptitle=f"test {e.index}: {class_names[e.label]} "
                                                    f"(p={e.probs[e.label]:.3f})"))
    return paths


def explain(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, float]:
    """Run the explain task from the composed eval config (``task=explain``; ``overrides`` are not needed)."""
    imported = cfg.get("ckpt_path") is None
    if imported and not (cfg.get("model") or {}).get("weights"):
        raise ConfigError("task=explain needs ckpt_path=<checkpoint> or model.weights=<imported file>")
    with task_context("explain") as info:
        output_dir = prepare(cfg)
        settings = instantiate(cfg.explain, "explain")
        if not isinstance(settings, ExplainSettings):
            raise ConfigError(f"explain._target_ must build an ExplainSettings, got {type(settings).__name__}")
        datamodule = build_datamodule(cfg)
        datamodule.setup("test")
        model = build_model(cfg, datamodule)
        if not imported:
            load_model_weights(model, cfg.ckpt_path)
        n_test = datamodule.split_size("test")
        if max(settings.indices) >= n_test:
            raise ConfigError(f"explain.indices go up to {max(settings.indices)} but the test split has "
                              f"{n_test} images")
        x, y = datamodule.take("test", settings.indices)
        class_names = list(datamodule.class_names) or [str(k) for k in range(datamodule.num_classes)]
        results = explain_images(model, x, y, settings, settings.indices)
        directory = output_dir / "explanations"
        grids = {}
        for e in results:
            paths = write_explanation(e, directory, class_names, settings.grid)
            if settings.grid:
                grids[f"{e.index}-{class_names[e.label]}"] = str(paths[-1])
        log_image_files(build_components(cfg, "logger"), "explain/grids", list(grids.values()), list(grids))
        log.info("Wrote explanations of %d images to %s", len(results), directory)
    metrics = {f"explain/p_true/{e.index}": float(e.probs[e.label]) for e in results}
    write_results(output_dir, metrics, task="explain", directory=str(directory), images=grids,
                  checkpoint=str(cfg.ckpt_path if not imported else cfg.model.weights), **info)
    return metrics


__all__ = ["ExplainSettings", "Explanation", "explain", "explain_images", "explain_toward", "seed_file_names", "write_explanation"]
