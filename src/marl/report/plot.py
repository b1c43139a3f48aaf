"""Learning curves as PNG: evaluation return against env steps, IQM over seeds with a shaded 95% CI."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from marl.report.model import Curve, Estimate


def plot_curves(curves: dict[str, Curve], title: str, path: Path, metric: str = "eval/return_mean") -> Path:
    """One figure for one env: a line and a shaded band per group (label -> curve)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works on nodes without a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for label, curve in curves.items():
        n = int(curve.runs.max()) if curve.runs.size else 0
        (line,) = ax.plot(curve.steps, curve.iqm, label=f"{label} ({n} seed{'s' if n != 1 else ''})", lw=1.8)
        ax.fill_between(curve.steps, curve.low, curve.high, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"{metric} (IQM, 95% CI)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# --- across tasks (--aggregate, marl.report.across_tasks) ------------------------------------------

def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:  # type: ignore[no-untyped-def]
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    fig.clf()
    _pyplot().close(fig)
    return path


def plot_aggregates(estimates: dict[str, dict[str, Estimate]], path: Path) -> Path:
    """rliable's interval plot: one panel per aggregate (IQM, mean, median, optimality gap), a 95% CI bar
    and the point estimate per algorithm."""
    plt = _pyplot()
    names = list(next(iter(estimates.values())))
    algos = list(estimates)
    fig, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names), 0.5 * len(algos) + 1.4), dpi=120, sharey=True)
    for ax, name in zip(axes, names):
        for y, algo in enumerate(algos):
            e = estimates[algo][name]
            ax.barh(y, e.high - e.low, left=e.low, height=0.6, color=f"C{y}", alpha=0.6)
            ax.plot([e.value, e.value], [y - 0.3, y + 0.3], color="k", lw=1.5)
        ax.set_title(name.replace("_", " ").replace("iqm", "IQM"))
        ax.set_xlabel("normalised score")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(algos)), algos)
    return _save(fig, path)


def plot_profiles(taus: np.ndarray, profiles: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                  path: Path) -> Path:
    """Performance profiles: the fraction of runs scoring above τ, with shaded 95% CI bands."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for algo, (value, low, high) in profiles.items():
        (line,) = ax.plot(taus, value, label=algo, lw=1.8)
        ax.fill_between(taus, low, high, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("normalised score τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_title("Performance profiles (95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return _save(fig, path)


def plot_improvement(pairs: list[tuple[str, str, Estimate]], path: Path) -> Path:
    """The probability of improvement of each pair: a 95% CI bar and the point estimate, 0.5 marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(pairs) + 1.4), dpi=120)
    for y, (_, _, e) in enumerate(pairs):
        ax.barh(y, e.high - e.low, left=e.low, height=0.6, color="C0", alpha=0.6)
        ax.plot([e.value, e.value], [y - 0.3, y + 0.3], color="k", lw=1.5)
    ax.axvline(0.5, color="grey", ls="--", lw=1)
    ax.set_yticks(range(len(pairs)), [f"P({x} > {y})" for x, y, _ in pairs])
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability of improvement")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)
