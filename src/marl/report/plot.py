"""Learning curves as PNG: evaluation return against env steps, IQM over seeds with a shaded 95% CI."""

from __future__ import annotations

from pathlib import Path

from marl.report.model import Curve


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
