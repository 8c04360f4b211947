"""Evaluation plots as PNG files (matplotlib's Agg canvas; pyplot's global state is never touched).

:func:`write_plots` writes ``roc_curve.png``, ``pr_curve.png``, ``calibration_curve.png``,
``confusion_matrix.png`` and ``feature_importance.png``; each file is written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnops.io import atomic_path

PLOT_FILES = {
    "roc": "roc_curve.png",
    "pr": "pr_curve.png",
    "calibration": "calibration_curve.png",
    "confusion": "confusion_matrix.png",
    "importance": "feature_importance.png",
}


def _figure(width: float = 5.5, height: float = 4.5) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, dest: Path) -> Path:
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png")
    return dest


def write_plots(
    y_true: Any,
    proba: Any,
    threshold: float,
    importance: pd.Series | None,
    out_dir: Path | str,
    *,
    title: str = "",
    top_features: int = 20,
) -> dict[str, Path]:
    """Write the evaluation plots of churn probabilities `proba` against labels `y_true` into `out_dir`."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import (
        average_precision_score,
        confusion_matrix,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    out = Path(out_dir)
    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype=float)
    prefix = f"{title}: " if title else ""
    paths: dict[str, Path] = {}

    fpr, tpr, roc_thr = roc_curve(y, p)
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, label=f"ROC (AUC {roc_auc_score(y, p):.4f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="chance")
    pred = p >= threshold
    op_fpr = float(np.mean(pred[y == 0])) if np.any(y == 0) else 0.0
    op_tpr = float(np.mean(pred[y == 1])) if np.any(y == 1) else 0.0
    ax.scatter([op_fpr], [op_tpr], color="red", zorder=3, label=f"threshold {threshold:.3f}")
    ax.set(xlabel="false positive rate", ylabel="true positive rate (recall)", title=f"{prefix}ROC curve",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    paths["roc"] = _save(fig, out / PLOT_FILES["roc"])

    precision, recall, _ = precision_recall_curve(y, p)
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(recall, precision, label=f"PR (AP {average_precision_score(y, p):.4f})")
    ax.axhline(float(y.mean()), linestyle="--", color="grey", linewidth=0.8, label="churn rate")
    tp = float(np.sum(pred & (y == 1)))
    op_precision = tp / max(float(np.sum(pred)), 1.0)
    ax.scatter([op_tpr], [op_precision], color="red", zorder=3, label=f"threshold {threshold:.3f}")
    ax.set(xlabel="recall", ylabel="precision", title=f"{prefix}precision-recall curve",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left")
    paths["pr"] = _save(fig, out / PLOT_FILES["pr"])

    frac_pos, mean_pred = calibration_curve(y, p, n_bins=10, strategy="quantile")
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(mean_pred, frac_pos, marker="o", label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="perfectly calibrated")
    ax.set(xlabel="mean predicted churn probability (decile)", ylabel="observed churn rate",
           title=f"{prefix}calibration", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    paths["calibration"] = _save(fig, out / PLOT_FILES["calibration"])

    cm = confusion_matrix(y, pred.astype(int), labels=[0, 1])
    fig = _figure(4.5, 4.0)
    ax = fig.add_subplot()
    ax.imshow(cm, cmap="Blues")
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, str(count), ha="center", va="center",
                color="white" if count > cm.max() / 2 else "black", fontsize=12)
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["stays", "churns"], yticklabels=["stays", "churns"],
           xlabel="predicted", ylabel="actual", title=f"{prefix}confusion (threshold {threshold:.3f})")
    paths["confusion"] = _save(fig, out / PLOT_FILES["confusion"])

    if importance is not None and len(importance):
        top = importance.sort_values(ascending=False).head(top_features)[::-1]
        fig = _figure(6.5, max(3.0, 0.28 * len(top) + 1.2))
        ax = fig.add_subplot()
        ax.barh(list(top.index), top.to_numpy())
        ax.set(xlabel=str(importance.name or "importance"), title=f"{prefix}feature importance")
        ax.tick_params(axis="y", labelsize=8)
        paths["importance"] = _save(fig, out / PLOT_FILES["importance"])
    return paths
