"""Summaries and plots of an evaluation: ``<csv stem>.summary.json`` / ``.summary.md`` next to the
per-image CSV, and ``<csv stem>_plots/`` (matplotlib, imported only when plotting)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from iqpfr.eval.protocol import metric_spec, package_versions
from iqpfr.utils.fs import atomic_write_text


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def column_stats(rows: list[dict[str, Any]], column: str) -> dict[str, Any]:
    """n, mean, std, median, min, max of a column (non-numeric cells ignored; inf kept out of mean)."""
    values = [v for v in (_float(r.get(column)) for r in rows) if v is not None]
    finite = np.array([v for v in values if math.isfinite(v)], dtype=np.float64)
    stats: dict[str, Any] = {"n": len(values), "n_infinite": len(values) - len(finite)}
    if len(finite):
        stats.update(mean=float(finite.mean()), std=float(finite.std()), median=float(np.median(finite)),
                     min=float(finite.min()), max=float(finite.max()))
    return stats


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def build_summary(cfg, metrics: list[str], rows: list[dict[str, Any]], set_values: dict[str, Any],
                  failures: list[str]) -> dict[str, Any]:
    """The summary dict: per-column statistics, set-level values, protocol, versions and config."""
    per_column: dict[str, Any] = {}
    protocol: dict[str, Any] = {}
    for metric in metrics:
        spec = metric_spec(metric)
        protocol[metric] = {"kind": spec.kind, "higher_better": spec.higher_better, "protocol": spec.protocol}
        if spec.kind != "set":
            for column in spec.columns:
                per_column[column] = {"higher_better": spec.higher_better, **column_stats(rows, column)}
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "n_images": len(rows),
        "n_failed": len(failures),
        "failures": failures[:100],
        "metrics": per_column,
        "set_metrics": set_values,
        "protocol": protocol,
        "versions": package_versions(),
        "config": _jsonable(dataclasses.asdict(cfg)),
    }


def summary_paths(out_csv: Path) -> tuple[Path, Path]:
    return out_csv.with_name(out_csv.stem + ".summary.json"), out_csv.with_name(out_csv.stem + ".summary.md")


def summary_markdown(summary: dict[str, Any]) -> str:
    """A human-readable table of the summary."""
    lines = [f"# Evaluation summary ({summary['created']})", "",
             f"Images: {summary['n_images']}, failed: {summary['n_failed']}.", "",
             "| metric | better | mean | std | median | n |", "|---|---|---|---|---|---|"]
    for column, stats in summary["metrics"].items():
        better = "higher" if stats["higher_better"] else "lower"
        if "mean" in stats:
            lines.append(f"| {column} | {better} | {stats['mean']:.4f} | {stats['std']:.4f} | "
                         f"{stats['median']:.4f} | {stats['n']} |")
        else:
            lines.append(f"| {column} | {better} | - | - | - | {stats['n']} |")
    for name, value in summary["set_metrics"].items():
        if isinstance(value, float):
            lines.append(f"| {name} | lower | {value:.4f} | | | |")
    lines += ["", "## Protocol", ""]
    lines += [f"- **{name}**: {item['protocol']}" for name, item in summary["protocol"].items()]
    lines += ["", "## Versions", "", ", ".join(f"{k} {v}" for k, v in summary["versions"].items()), ""]
    return "\n".join(lines)


def write_summary(out_csv: Path, summary: dict[str, Any]) -> tuple[Path, Path]:
    """Write the JSON and markdown summaries next to ``out_csv`` (atomically)."""
    json_path, md_path = summary_paths(Path(out_csv))
    atomic_write_text(json_path, json.dumps(_jsonable(summary), indent=2, allow_nan=True) + "\n")
    atomic_write_text(md_path, summary_markdown(summary))
    return json_path, md_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_distributions(out_csv: Path, rows: list[dict[str, Any]], columns: list[str]) -> Path | None:
    """One histogram per metric column in ``<csv stem>_plots/distributions.png``."""
    data = {c: [v for v in (_float(r.get(c)) for r in rows) if v is not None and math.isfinite(v)] for c in columns}
    data = {c: v for c, v in data.items() if v}
    if not data:
        return None
    plt = _pyplot()
    n = len(data)
    cols = min(3, n)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(4 * cols, 3 * ((n + cols - 1) // cols)),
                             squeeze=False)
    for ax, (column, values) in zip(axes.flat, data.items()):
        ax.hist(values, bins=min(30, max(5, len(values) // 3)), color="#4477aa")
        ax.set_title(f"{column} (mean {np.mean(values):.3f}, n={len(values)})", fontsize=9)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    target = Path(out_csv).with_name(Path(out_csv).stem + "_plots") / "distributions.png"
    from iqpfr.utils.fs import atomic_write_with

    atomic_write_with(target, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return target


def plot_quality_fidelity(target: Path, table: list[dict[str, Any]], quality: str, fidelity: str) -> Path | None:
    """Quality-vs-fidelity curve: one point per ``w`` (labelled), one line per quality target."""
    points = [r for r in table if _float(r.get(quality)) is not None and _float(r.get(fidelity)) is not None]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for q in sorted({str(r.get("quality")) for r in points}):
        line = sorted((r for r in points if str(r.get("quality")) == q), key=lambda r: float(r["w"]))
        xs = [_float(r[fidelity]) for r in line]
        ys = [_float(r[quality]) for r in line]
        ax.plot(xs, ys, marker="o", label=f"quality target {q}")
        for r, x, y in zip(line, xs, ys):
            ax.annotate(f"w={float(r['w']):g}", (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel(f"{fidelity} ({'higher' if metric_spec(fidelity).higher_better else 'lower'} is better)")
    ax.set_ylabel(f"{quality} ({'higher' if metric_spec(quality).higher_better else 'lower'} is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    from iqpfr.utils.fs import atomic_write_with

    atomic_write_with(target, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return target
