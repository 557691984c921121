"""One self-contained HTML page for a multirun: table, robust-accuracy curves, masking flags, every job's figures.

    python -m robustxai.analysis.report outputs/quickstart/multiruns/<time>    # writes <dir>/report.html

Also written after every sweep (``ComparisonTableCallback``). Images are embedded as base64 and the
CSS is inline, so the file can be mailed or archived alone: it references no URL.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import jinja2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from robustxai.analysis.compare import LEGEND, _fmt, _job_label, collect  # noqa: E402

TEMPLATES = Path(__file__).resolve().parent / "templates"
HEADLINE = {"NA": "test/acc", "AA": "test/robust_acc/", "IN": "test/topk_intersection/", "CO": "test/kendall/"}
COLOURS = plt.get_cmap("tab10").colors


def _png(fig: plt.Figure) -> str:
    """A figure as a ``data:`` URI (and closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _file_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def describe(job_dir: Path, config: dict[str, Any]) -> str:
    """The job's overrides; an evaluated checkpoint is named by its training run's overrides, not its path."""
    label = _job_label(job_dir)
    ckpt = config.get("ckpt_path")
    if not ckpt:
        return label
    run_dir = Path(ckpt).parent.parent
    trained = f"[trained: {_job_label(run_dir)}]" if (run_dir / ".hydra" / "overrides.yaml").is_file() \
        else f"ckpt_path=.../{'/'.join(Path(ckpt).parts[-4:])}"
    return " ".join(trained if item.startswith("ckpt_path=") else item for item in label.split(" "))


def load_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job of ``sweep_dir`` that wrote ``results.json``: its name, overrides, results, config and images."""
    jobs = []
    for results in sorted(sweep_dir.glob("*/results.json"), key=lambda p: (len(p.parent.name), p.parent.name)):
        job_dir = results.parent
        record = json.loads(results.read_text())
        masking = dict(record.get("masking") or {})
        for extra in sorted(job_dir.glob("masking_*.json")):  # a task that ran the checks but did not merge them
            masking.setdefault(extra.stem[len("masking_"):], json.loads(extra.read_text()))
        config_file = job_dir / "config.yaml"
        config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
        jobs.append({"name": job_dir.name, "label": describe(job_dir, config or {}),
                     "metrics": record.get("metrics", {}), "masking": masking, "config": config or {}, "task": record.get("task", ""),
                     "wall_time_s": record.get("wall_time_s"),
                     "images": sorted((job_dir / "images").glob("*.png")) if (job_dir / "images").is_dir() else []})
    return jobs


# -- figures -----------------------------------------------------------------------------------------

def headline_figure(jobs: list[dict[str, Any]]) -> str | None:
    """Grouped bars of NA, AA, IN, CO (the first metric of each family) per job."""
    families = []
    for short, prefix in HEADLINE.items():
        keys = sorted({k for j in jobs for k in j["metrics"] if k == prefix or (prefix.endswith("/") and k.startswith(prefix))})
        if keys:
            families.append((f"{short}\n{keys[0].split('/')[-1]}", keys[0]))  # e.g. "AA" over "pgd"
    if not families:
        return None
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(families) * (1 + 0.25 * len(jobs))), 3.2))
    width = 0.8 / len(jobs)
    for i, job in enumerate(jobs):
        values = [job["metrics"].get(key) or 0.0 for _, key in families]
        xs = [f + (i - (len(jobs) - 1) / 2) * width for f in range(len(families))]
        bars = ax.bar(xs, values, width * 0.92, color=COLOURS[i % 10], label=f"{job['name']}: {job['label']}")
        ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
    ax.set_xticks(range(len(families)), [label for label, _ in families], fontsize=7)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("value")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(3, len(jobs)))
    return _png(fig)


def masking_curves(jobs: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """``{attack: {job label: (eps, robust acc)}}`` from each job's masking record (PGD at eps multiples)."""
    curves: dict[str, dict[str, Any]] = defaultdict(dict)
    for job in jobs:
        for attack, record in job["masking"].items():
            measured = (record.get("checks", {}).get("monotone_eps") or {}).get("measured") or {}
            if measured.get("eps"):
                curves[attack][f"{job['name']}: {job['label']}"] = (measured["eps"], measured["robust_acc"])
    return curves


def sweep_curves(jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{attack: {group: (eps, robust acc)}}`` where jobs differ only in an attack's eps (a sweep over eps)."""
    points: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for job in jobs:
        attacks = (job["config"] or {}).get("attack") or {}
        for key, value in job["metrics"].items():
            if not key.startswith("test/robust_acc/") or value is None:
                continue
            name = key.split("/", 2)[2]
            eps = (attacks.get(name) or {}).get("eps") if isinstance(attacks, dict) else None
            if isinstance(eps, (int, float)):
                others = " ".join(o for o in job["label"].split() if "eps" not in o) or "all jobs"
                points[name][others].append((float(eps), float(value)))
    return {name: {group: tuple(map(list, zip(*sorted(p)))) for group, p in groups.items()
                   if len({e for e, _ in p}) > 1}
            for name, groups in points.items() if any(len({e for e, _ in p}) > 1 for p in groups.values())}


def curve_figure(title: str, curves: dict[str, Any], marks: dict[str, tuple[float, float]] | None = None) -> str:
    """Robust accuracy against eps, one line per job (or group), optional points at the configured eps."""
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    for i, (label, (eps, acc)) in enumerate(curves.items()):
        ax.plot(eps, acc, marker="o", ms=3.5, lw=1.6, color=COLOURS[i % 10], label=label)
        if marks and label in marks:
            ax.plot(*marks[label], marker="*", ms=11, color=COLOURS[i % 10], markeredgecolor="black", lw=0)
    ax.set_xlabel("eps (pixel units of the [0, 1] box)")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=6.5, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


# -- the page ----------------------------------------------------------------------------------------

def _masking_rows(jobs: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    names: list[str] = []
    rows = []
    for job in jobs:
        for attack, record in job["masking"].items():
            checks = record.get("checks", {})
            names += [n for n in checks if n not in names]
            rows.append({"job": job["name"], "label": job["label"], "attack": attack, "status": record.get("status"),
                         "n_images": record.get("n_images"), "checks": checks})
    return names, rows


def _best(columns: list[str], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The best value of each column (highest), so the table can mark it."""
    best = {}
    for column in columns:
        values = [r.get(column) for r in rows if isinstance(r.get(column), (int, float))]
        if len(values) > 1:
            best[column] = max(values)
    return best


def render(sweep_dir: Path) -> str:
    """The report of ``sweep_dir`` as an HTML string."""
    jobs = load_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no <job>/results.json under {sweep_dir}: is it a multirun directory?")
    common = _common_overrides(jobs)
    for job in jobs:
        job["label"] = " ".join(t for t in job["label"].split(" ") if t not in common) or "(no own overrides)"
    columns, rows = collect(sweep_dir)
    for row, job in zip(rows, jobs):  # the same jobs in the same order
        row["overrides"] = job["label"]
    headers = {c: next((s for p, s in LEGEND.items() if c == p or (p.endswith("/") and c.startswith(p))), "")
               for c in columns}
    figures = []
    headline = headline_figure(jobs)
    if headline:
        figures.append({"title": "Headline metrics", "uri": headline,
                        "caption": "NA: clean accuracy; AA: robust accuracy; IN: top-k intersection; CO: Kendall's "
                                   "tau of the attacked explanation (the first attack of each family)."})
    for attack, curves in masking_curves(jobs).items():
        marks = {}
        for job in jobs:
            record, value = job["masking"].get(attack), job["metrics"].get(f"test/robust_acc/{attack}")
            if record and value is not None:
                marks[f"{job['name']}: {job['label']}"] = (record.get("eps"), value)
        figures.append({"title": f"Robust accuracy vs eps: {attack}", "uri": curve_figure(
            f"PGD ({attack}) at multiples of eps, first {_first_n(jobs, attack)} test images", curves, marks),
            "caption": "Lines: the masking check's PGD at eps multiples (its image subset); stars: the full "
                       "evaluation's robust accuracy at the configured eps."})
    for attack, curves in sweep_curves(jobs).items():
        figures.append({"title": f"Robust accuracy vs eps across jobs: {attack}",
                        "uri": curve_figure(f"test/robust_acc/{attack} over the sweep's eps", curves),
                        "caption": "One point per job; jobs that differ only in eps form a line."})
    mask_names, mask_rows = _masking_rows(jobs)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(["html"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(
        title=f"robustxai report: {sweep_dir.name}", sweep_dir=str(sweep_dir.resolve()),
        generated=time.strftime("%Y-%m-%d %H:%M:%S"), common=" ".join(common), columns=columns, headers=headers, rows=rows,
        best=_best(columns, rows), fmt=_fmt, figures=figures, mask_names=mask_names, mask_rows=mask_rows,
        flagged=sum(r["status"] == "flag" for r in mask_rows),
        jobs=[{**job, "images": [{"name": p.name, "uri": _file_uri(p)} for p in job["images"]]} for job in jobs])


def _common_overrides(jobs: list[dict[str, Any]]) -> list[str]:
    """Overrides every job shares (shown once in the header, not in every label); none for a single job."""
    if len(jobs) < 2:
        return []
    first = jobs[0]["label"].split(" ")
    return [t for t in first if all(t in j["label"].split(" ") for j in jobs[1:])]


def _first_n(jobs: list[dict[str, Any]], attack: str) -> str:
    counts = sorted({j["masking"][attack].get("n_images") for j in jobs if attack in j["masking"]} - {None})
    return "/".join(map(str, counts)) or "?"


def write_report(sweep_dir: Path) -> Path:
    """Write ``<sweep_dir>/report.html`` and return its path."""
    path = Path(sweep_dir) / "report.html"
    html = render(Path(sweep_dir))
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (holds <job>/results.json)")
    args = parser.parse_args(argv)
    print(write_report(args.sweep_dir))


if __name__ == "__main__":
    main()
