"""The multirun report: one self-contained HTML page (table, curves, masking flags, images), seen in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from robustxai.analysis.masking import check_large_eps, check_monotone_eps, summarise  # noqa: E402
from robustxai.analysis.report import main, render, sweep_curves, write_report, load_jobs  # noqa: E402


def _png(path: Path, colour: str) -> None:
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.imshow(np.random.default_rng(0).random((8, 8)), cmap="gray")
    ax.set_title(colour, color=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)
    plt.close(fig)


def _job(sweep: Path, name: str, overrides: list[str], metrics: dict, eps: float = 0.1, flag: bool = False) -> None:
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / "config.yaml").write_text(yaml.safe_dump({"attack": {"pgd": {"eps": eps}}}))
    masking = {"pgd": summarise([check_large_eps(1.0, 0.5 if flag else 0.0),
                                 check_monotone_eps([0.025, 0.05, 0.1], [0.8, 0.6, metrics["test/robust_acc/pgd"]])],
                                n_images=16, eps=eps)}
    (job / "results.json").write_text(json.dumps({"metrics": metrics, "masking": masking, "task": "eval"}))
    _png(job / "images" / "pgd.png", "red")
    _png(job / "images" / "topk.png", "blue")


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    base = {"test/acc": 0.9, "test/robust_acc/pgd": 0.4, "test/kendall/topk": 0.6, "test/max_linf/pgd": 0.1}
    _job(tmp_path, "0", ["method=natural"], base)
    _job(tmp_path, "1", ["method=pgd_at"], {**base, "test/robust_acc/pgd": 0.55}, flag=True)
    return tmp_path


def test_report_is_self_contained_with_table_images_curves_and_flags(sweep):
    path = write_report(sweep)
    html = path.read_text()
    assert path.name == "report.html" and path.parent == sweep
    assert not re.search(r"(src|href)\s*=\s*[\"'](?!data:|#)", html), "the page must reference no file or URL"
    assert "http://" not in html and "https://" not in html
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 2 * 2 + 2  # two grids per job, the headline bars and the PGD-vs-eps curve
    assert all(len(i) > 200 for i in images)
    assert html.count("<table") == 2  # the comparison and the masking table
    assert "method=pgd_at" in html and "0.5500" in html and "test/max_linf" not in html.split('id="masking"')[0]
    assert "1 / 2" in html  # one of two evaluations flagged
    assert html.count('class="badge flag"') >= 2 and "large_eps" in html


def test_report_draws_a_curve_across_jobs_that_sweep_eps(tmp_path):
    for i, (eps, acc) in enumerate([(0.05, 0.7), (0.1, 0.5), (0.2, 0.2)]):
        _job(tmp_path, str(i), [f"attack.pgd.eps={eps}", "method=pgd_at"], {"test/acc": 0.9, "test/robust_acc/pgd": acc},
             eps=eps)
    curves = sweep_curves(load_jobs(tmp_path))
    assert curves == {"pgd": {"method=pgd_at": ([0.05, 0.1, 0.2], [0.7, 0.5, 0.2])}}
    assert "Robust accuracy vs eps across jobs: pgd" in render(tmp_path)


def test_an_evaluated_checkpoint_is_named_by_its_training_run(tmp_path):
    train_run = tmp_path / "train" / "3"
    (train_run / ".hydra").mkdir(parents=True)
    (train_run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["method=trades", "seed=1"]))
    sweep = tmp_path / "eval"
    _job(sweep, "0", [f"ckpt_path={train_run}/checkpoints/last.ckpt", "data.test_subset=40"],
         {"test/acc": 0.9, "test/robust_acc/pgd": 0.5})
    config = yaml.safe_load((sweep / "0" / "config.yaml").read_text())
    (sweep / "0" / "config.yaml").write_text(yaml.safe_dump({**config, "ckpt_path": f"{train_run}/checkpoints/last.ckpt"}))
    assert load_jobs(sweep)[0]["label"] == "[trained: method=trades seed=1] data.test_subset=40"
    assert "[trained: method=trades seed=1]" in render(sweep)


def test_cli_and_a_directory_without_jobs(sweep, tmp_path, capsys):
    main([str(sweep)])
    assert capsys.readouterr().out.strip().endswith("report.html")
    with pytest.raises(FileNotFoundError, match="results.json"):
        render(tmp_path / "empty")


def test_multirun_callback_writes_the_report_beside_the_table(sweep):
    from omegaconf import OmegaConf

    from robustxai.analysis.sweep_callbacks import ComparisonTableCallback

    ComparisonTableCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert (sweep / "comparison.md").is_file() and (sweep / "report.html").is_file()


def _chromium() -> str | None:
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary on PATH (Debian: apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(sweep, tmp_path):
    html = write_report(sweep)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1400",
             "--user-data-dir=" + str(tmp_path / "profile")]
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), *flags, f"--screenshot={shot}", html.as_uri()], check=True, capture_output=True,
                   timeout=120)
    pixels = plt.imread(shot)[..., :3]
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    assert pixels.std() > 0.05  # not blank: text, tables and figures drawn
    assert (pixels.mean(axis=2) < 0.5).mean() > 0.01  # dark ink somewhere (the header bar, text)
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", html.as_uri()], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    assert '<table class="comparison">' in dom and '<table class="masking">' in dom
    assert len(re.findall(r'<img src="data:image/png;base64,', dom)) == 6
    assert "method=pgd_at" in dom
