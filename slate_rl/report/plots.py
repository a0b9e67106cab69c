"""Figures of one environment: learning curves and a bar chart of test returns.

Matplotlib is imported inside the functions and draws through the Agg canvas directly (no
pyplot, no global backend state), so the report works on machines without a display.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from slate_rl.core.stats import curve_band
from slate_rl.report.statistics import performance_profile
from slate_rl.report.tables import Aggregate, EnvReport, MethodSummary

_REFERENCE_STYLE = {  # name -> (colour, line style)
    "oracle": ("black", "--"),
    "eps-greedy": ("dimgray", "--"),
    "random": ("darkgray", "--"),
    "behaviour": ("saddlebrown", ":"),
    "zero_action": ("rosybrown", ":"),
    "random_action": ("silver", ":"),
}


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colours(report: EnvReport) -> dict[int, Any]:
    """One colour per method, in table order, shared by both figures."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(report.methods) <= 10 else "tab20"]
    return {id(m): cmap(i % cmap.N) for i, m in enumerate(report.methods)}


def _seeds(m: MethodSummary) -> str:
    return f"{m.n_seeds} seed{'s' * (m.n_seeds != 1)}"


def _save(fig: Any, path: str | os.PathLike[str]) -> None:
    fig.savefig(path, format="png", dpi=110, metadata={"Software": None})


def plot_curves(report: EnvReport, path: str | os.PathLike[str]) -> None:
    """Validation return vs step, mean and 95% CI band over seeds, one line per method; online
    agents and offline algorithms in separate panels (their steps differ); references dashed."""
    colours = _colours(report)
    panels: list[tuple[str, str, list[MethodSummary]]] = []
    for kind, title, xlabel in (("online", "Online agents", "training step"),
                                ("offline", "Offline algorithms", "gradient step")):
        methods = [m for m in report.methods if m.kind == kind and m.curves()]
        if methods:
            panels.append((title, xlabel, methods))
    fig = _new_figure(7.5 * max(len(panels), 1), 4.6)
    if not panels:
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"{report.env}: no learning curves yet", ha="center", va="center")
        _save(fig, path)
        return
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, xlabel, methods) in zip(axes, panels, strict=True):
        for m in methods:
            steps, mean, ci = curve_band(m.curves())
            label = f"{report.method_label(m)} ({_seeds(m)})"
            ax.plot(steps, mean, color=colours[id(m)], label=label, marker="." if steps.size < 30 else None)
            band = np.isfinite(ci)
            if band.any():
                ax.fill_between(steps, mean - np.where(band, ci, 0), mean + np.where(band, ci, 0),
                                where=band, color=colours[id(m)], alpha=0.2, linewidth=0)
        offline_panel = methods[0].kind == "offline"
        for r in report.references:
            if r.name in ("behaviour", "zero_action", "random_action") and not offline_panel:
                continue
            colour, style = _REFERENCE_STYLE.get(r.name, ("gray", "--"))
            ax.axhline(r.return_mean, color=colour, linestyle=style, linewidth=1.2,
                       label=f"{report.reference_label(r)}: {r.return_mean:.1f}")
        ax.set_title(f"{report.env}: {title}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation return (clicks per session)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    _save(fig, path)


_DIAGNOSTIC_PANELS = (  # (diagnostic, a second one drawn dotted or None, title, y label)
    ("overestimation", None, "over-estimation", "Q(s, a) - Monte-Carlo return on the played sessions"),
    ("action_distance", "noise_distance", "action distance (dotted: collection noise)",
     "distance to the dataset action (GeMS half-widths)"),
    ("slot_match", "slate_match", "slate agreement (dotted: whole slate)",
     "fraction of slots (dotted: slates) as the dataset's"),
)


def _band(ax: Any, curves: list[np.ndarray], colour: Any, label: str | None, style: str = "-") -> None:
    """Mean over seeds with its 95% CI band (where two seeds or more have the step)."""
    steps, mean, ci = curve_band(curves)
    ax.plot(steps, mean, color=colour, label=label, linestyle=style, marker="." if steps.size < 30 else None)
    band = np.isfinite(ci)
    if band.any():
        ax.fill_between(steps, mean - np.where(band, ci, 0), mean + np.where(band, ci, 0), where=band, color=colour,
                        alpha=0.2, linewidth=0)


def plot_diagnostics(report: EnvReport, quality: str, path: str | os.PathLike[str]) -> None:
    """The offline methods on ``quality`` data: over-estimation, distance from the dataset actions (beside the
    collection noise's, dotted) and slate agreement (slots; whole slates dotted) vs gradient step, mean and 95% CI
    band over seeds."""
    colours = _colours(report)
    methods = [m for m in report.methods if m.kind == "offline" and m.quality == quality]
    fig = _new_figure(5.2 * len(_DIAGNOSTIC_PANELS) + 2.5, 4.2)
    axes = fig.subplots(1, len(_DIAGNOSTIC_PANELS), squeeze=False)[0]
    for ax, (name, reference, title, ylabel) in zip(axes, _DIAGNOSTIC_PANELS, strict=True):
        for m in methods:
            curves = m.diagnostic_curves(name)
            if curves:
                _band(ax, curves, colours[id(m)], f"{m.label} ({_seeds(m)})")
                if reference and m.diagnostic_curves(reference):
                    _band(ax, m.diagnostic_curves(reference), colours[id(m)], None, ":")
        if name == "overestimation":
            ax.axhline(0.0, color="gray", linewidth=0.8)
        if name == "slot_match":
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{report.env}, {quality} data: {title}", fontsize=9)
        ax.set_xlabel("gradient step")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        axes[-1].legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    _save(fig, path)


def plot_returns(report: EnvReport, path: str | os.PathLike[str]) -> None:
    """Horizontal bars of the test return with 95% CI error bars, methods best first, then references."""
    colours = _colours(report)
    labels, values, errors, fills = [], [], [], []
    for m in report.methods:
        ci, _ = m.return_ci()
        labels.append(f"{report.method_label(m)} ({_seeds(m)})")
        values.append(m.return_mean)
        errors.append(ci)
        fills.append(colours[id(m)])
    for r in report.references:
        labels.append(f"{report.reference_label(r)} [ref]")
        values.append(r.return_mean)
        errors.append(r.return_ci95)
        fills.append("lightgray")
    fig = _new_figure(7.5, 1.2 + 0.38 * max(len(labels), 2))
    ax = fig.add_subplot()
    if not labels:
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"{report.env}: no results yet", ha="center", va="center")
        _save(fig, path)
        return
    y = np.arange(len(labels))
    err = np.nan_to_num(np.asarray(errors, dtype=np.float64), nan=0.0)
    bars = ax.barh(y, values, xerr=err, color=fills, edgecolor="black", linewidth=0.5,
                   error_kw={"elinewidth": 1, "capsize": 3})
    for bar, kind in zip(bars, ["method"] * len(report.methods) + ["ref"] * len(report.references), strict=True):
        if kind == "ref":
            bar.set_hatch("//")
    for yi, value, e in zip(y, values, err, strict=True):
        text = f"{value:.1f}" if math.isfinite(value) else "n/a"
        ax.text(value + e, yi, f" {text}", va="center", fontsize=8)
    if report.methods and report.references:
        ax.axhline(len(report.methods) - 0.5, color="gray", linewidth=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("test return (clicks per session), mean and 95% CI")
    ax.set_title(f"{report.env}: test returns")
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.12)
    _save(fig, path)


def plot_profiles(aggregate: Aggregate, path: str | os.PathLike[str]) -> None:
    """Performance profiles of the offline algorithms: the fraction of runs (averaged over tasks) whose
    normalised score exceeds tau, one line per algorithm (Agarwal et al., 2021)."""
    from matplotlib import colormaps

    fig = _new_figure(7.5, 4.6)
    ax = fig.add_subplot()
    values = np.concatenate([s for strata in aggregate.scores.values() for s in strata]) if aggregate.scores else None
    if values is None or not values.size:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no offline algorithm ran on a common dataset yet", ha="center", va="center")
        _save(fig, path)
        return
    taus = np.linspace(min(float(values.min()), 0.0), max(float(values.max()), 100.0), 201)
    cmap = colormaps["tab10"]
    for i, method in enumerate(aggregate.table["method"]):
        strata = aggregate.scores[method]
        runs = int(sum(s.size for s in strata))
        ax.plot(taus, performance_profile(strata, taus), color=cmap(i % cmap.N), drawstyle="steps-post",
                label=f"{aggregate.labels[method]} ({runs} runs)")
    ax.set_xlabel("normalised score tau (0 = random latent actions, 100 = the expert agent)")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.set_title(f"Performance profiles over {len(aggregate.tasks)} task{'s' * (len(aggregate.tasks) != 1)}")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
