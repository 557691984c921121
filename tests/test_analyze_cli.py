"""The analyze entry point through the command line: a tiny toy_boundary run and a two-job multirun."""

from __future__ import annotations

import json

from tests.conftest import run_cli

# 2 x 40 points, one epoch, 2-3 attack steps, a coarse grid and boundary search: seconds, not minutes
TINY = ["study=toy_boundary", "study.data.size=40", "study.data.batch_size=20", "study.epochs=1",
        "study.regimes.weak.attack.steps=2", "study.regimes.strong.attack.steps=2", "study.attack.steps=3",
        "study.grid_size=30", "study.boundary_directions=90", "study.boundary_samples=100", "study.progress=false"]


def test_toy_boundary_run_writes_results_figures_and_table(tmp_path):
    run_dir = tmp_path / "run"
    run_cli("analyze", *TINY, "study.seeds=[0,1]", f"hydra.run.dir={run_dir}")
    report = json.loads((run_dir / "results.json").read_text())
    metrics = report["metrics"]
    assert report["task"] == "analyze" and report["study"] == "toy_boundary" and report["wall_time_s"] > 0
    assert set(report["files"]) == {"toy_boundary.csv", "toy_boundary.md", "toy_boundary_seed0.png",
                                    "toy_boundary_seed1.png"}
    for regime in ("standard", "weak", "strong"):
        for seed in (0, 1):
            assert 0.0 <= metrics[f"test/tilt_deg/{regime}/seed_{seed}"] <= 90.0
            assert 0.0 <= metrics[f"test/on_manifold/{regime}/seed_{seed}"] <= 1.0
            assert 0.0 < metrics[f"test/displacement/{regime}/seed_{seed}"] <= 0.5 + 1e-6  # eval budget kept
        mean = (metrics[f"test/tilt_deg/{regime}/seed_0"] + metrics[f"test/tilt_deg/{regime}/seed_1"]) / 2
        assert abs(metrics[f"test/tilt_deg/{regime}"] - mean) < 1e-4
    assert metrics["test/tilt_ordered"] in (0.0, 1.0)
    table = (run_dir / "toy_boundary.md").read_text()
    assert "| **strong** | mean ± std |" in table and (run_dir / "config.yaml").exists()


def test_toy_boundary_multirun_one_job_per_seed_with_comparison_table(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("analyze", "-m", *TINY, "study.seeds=[0],[1]", f"hydra.sweep.dir={sweep}")
    jobs = [json.loads((sweep / job / "results.json").read_text())["metrics"] for job in ("0", "1")]
    assert "test/tilt_deg/standard/seed_0" in jobs[0] and "test/tilt_deg/standard/seed_1" in jobs[1]
    assert (sweep / "0" / "toy_boundary_seed0.png").exists() and (sweep / "1" / "toy_boundary_seed1.png").exists()
    assert "test/tilt_deg/standard" in (sweep / "comparison.md").read_text()


def test_a_bad_study_value_fails_before_work_with_the_key_named(tmp_path):
    proc = run_cli("analyze", "study=toy_boundary", "study.manifold_quantile=2", f"hydra.run.dir={tmp_path / 'b'}",
                   check=False)
    assert proc.returncode != 0 and "Error: invalid config at `study`" in proc.stderr
    assert "manifold_quantile must be <= 1, got 2" in proc.stderr and not (tmp_path / "b" / "results.json").exists()
