"""The comparison table orders the headline metrics as the RAR paper does (NA, AA, IN, CO)."""

from __future__ import annotations

import json

from robustxai.analysis.compare import collect, write_tables


def _job(sweep, name, metrics):
    (sweep / name).mkdir(parents=True)
    (sweep / name / "results.json").write_text(json.dumps({"metrics": metrics}))


def test_columns_follow_na_aa_in_co_and_hide_budget_maxima(tmp_path):
    metrics = {"test/kendall/topk": 0.5, "test/max_linf/pgd": 0.3, "test/topk_intersection/topk": 0.4,
               "test/robust_acc/pgd": 0.2, "test/acc": 0.9, "test/spearman/topk": 0.6, "train/loss": 1.0}
    _job(tmp_path, "0", metrics)
    _job(tmp_path, "1", {**metrics, "test/acc": 0.8})
    columns, rows = collect(tmp_path)
    assert columns == ["test/acc", "test/robust_acc/pgd", "test/topk_intersection/topk", "test/kendall/topk",
                       "test/spearman/topk"]
    assert [row["test/acc"] for row in rows] == [0.9, 0.8]
    header = write_tables(tmp_path).splitlines()[0]
    assert header.startswith("| job | overrides | NA test/acc | AA test/robust_acc/pgd | IN test/topk_intersection/topk "
                             "| CO test/kendall/topk | test/spearman/topk |")
