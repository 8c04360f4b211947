"""Drift reports: a readable summary for the terminal, a JSON report for machines and a self-contained
HTML report for people, with a reference-vs-current plot per feature drawn as inline SVG (no plotting
library: 19 features render in milliseconds, where matplotlib took about a second per figure here)."""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnops.io import write_json_atomic, write_text_atomic
from churnops.logs import get_logger
from monitoring.detect import DriftResult, FeatureDrift

log = get_logger(__name__)

REF_COLOR, CUR_COLOR, GAP_COLOR = "#4c72b0", "#dd8452", "#c44e52"
STATUS_TEXT = {"drift": "DRIFT", "no_drift": "no drift", "not_enough_data": "not enough data"}


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _source_text(source: dict[str, Any]) -> str:
    def show(v: Any) -> str:
        if isinstance(v, dict):
            return ":".join(str(x) for x in v.values() if x not in (None, ""))
        return ",".join(map(str, v)) if isinstance(v, list) else str(v)

    return ", ".join(f"{k}={show(v)}" for k, v in source.items() if v not in (None, "", [], {})) or "-"


def render_text(result: DriftResult) -> str:
    """The summary `churnops drift check` prints."""
    lines = [
        f"drift check: {STATUS_TEXT[result.status]}  ({result.message})",
        f"  window {result.window_size} rows ({_source_text(result.source)})",
        f"  reference {result.reference_size} rows, model version {result.reference_version or '-'}; "
        f"backend {result.backend}, {result.config.correction} at p={result.config.p_value}"
        + (f" (per-feature threshold {result.threshold:.3g})" if result.threshold is not None else ""),
    ]
    if result.features:
        lines.append(f"  {'feature':<26}{'test':<6}{'statistic':>11}{'p-value':>11}{'effect':>9}{'floor':>7}"
                     "  verdict")
        for f in _ordered(result.features):
            verdict = "DRIFT" if f.drift else ("below floor" if f.significant else "ok")
            lines.append(f"  {f.feature:<26}{f.test:<6}{f.statistic:>11.4g}{f.p_value:>11.3g}"
                         f"{f.effect_size:>9.3f}{f.effect_floor:>7.2f}  {verdict}")
        lines.append("  effect: numeric = average shift in reference standard deviations (Wasserstein-1 / "
                     "std), categorical = share of rows that changed category (total variation)")
    return "\n".join(lines)


def _ordered(features: list[FeatureDrift]) -> list[FeatureDrift]:
    return sorted(features, key=lambda f: (not f.drift, not f.significant, -f.effect_size))


# -- plots (inline SVG: no plotting library, about a millisecond per feature) -----------------------

PANEL_W, PANEL_H = 360, 180
ML, MR, MT, MB = 46, 10, 22, 30  # margins: left, right, top, bottom


def _fmt(v: float) -> str:
    """Compact tick labels: 0.0012, 0.51, 742, 4.94k, 17.5k, 1.2M."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 1e3:
        return f"{v:.0f}"
    if a != 0 and a < 1e-3:
        return f"{v:.1e}"
    return f"{v:.3g}"


class _Panel:
    """One chart panel: data coordinates -> pixels, axes with ticks, a title and a legend."""

    def __init__(self, title: str, x0: float, x1: float, y0: float, y1: float) -> None:
        self.title, self.x0, self.x1, self.y0, self.y1 = title, x0, x1, y0, y1 if y1 > y0 else y0 + 1
        self.parts: list[str] = []

    def px(self, x: float) -> float:
        return ML + (x - self.x0) / ((self.x1 - self.x0) or 1) * (PANEL_W - ML - MR)

    def py(self, y: float) -> float:
        return PANEL_H - MB - (y - self.y0) / (self.y1 - self.y0) * (PANEL_H - MT - MB)

    def polyline(self, xs: np.ndarray, ys: np.ndarray, color: str, fill: bool = False,
                 width: float = 1.5) -> None:
        pts = " ".join(f"{self.px(x):.1f},{self.py(y):.1f}" for x, y in zip(xs, ys, strict=True))
        if fill:
            base = f"{self.px(xs[-1]):.1f},{self.py(self.y0):.1f} {self.px(xs[0]):.1f},{self.py(self.y0):.1f}"
            self.parts.append(f"<polygon points='{pts} {base}' fill='{color}' fill-opacity='0.4' "
                              f"stroke='{color}' stroke-width='1'/>")
        else:
            self.parts.append(f"<polyline points='{pts}' fill='none' stroke='{color}' "
                              f"stroke-width='{width}'/>")

    def rect(self, x: float, w: float, y: float, color: str) -> None:
        top, bottom = self.py(y), self.py(self.y0)
        width = self.px(x + w) - self.px(x)
        self.parts.append(f"<rect x='{self.px(x):.1f}' y='{top:.1f}' width='{width:.1f}' "
                          f"height='{bottom - top:.1f}' fill='{color}'/>")

    def vline(self, x: float, ya: float, yb: float, color: str) -> None:
        self.parts.append(f"<line x1='{self.px(x):.1f}' x2='{self.px(x):.1f}' y1='{self.py(ya):.1f}' "
                          f"y2='{self.py(yb):.1f}' stroke='{color}' stroke-width='2.5'/>")

    def render(self, legend: list[tuple[str, str]], xticks: list[tuple[float, str]] | None = None,
               legend_at_bottom: bool = False) -> str:
        e = html.escape
        out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{PANEL_W}' height='{PANEL_H}' "
               f"font-family='sans-serif' font-size='9'>",
               f"<text x='{ML}' y='12' font-size='10'>{e(self.title)}</text>",
               f"<rect x='{ML}' y='{MT}' width='{PANEL_W - ML - MR}' height='{PANEL_H - MT - MB}' "
               "fill='none' "
               "stroke='#999'/>"]
        for frac in (0.0, 0.5, 1.0):
            y = self.y0 + frac * (self.y1 - self.y0)
            out.append(f"<text x='{ML - 3}' y='{self.py(y) + 3:.1f}' text-anchor='end'>{_fmt(y)}</text>")
        ticks = xticks if xticks is not None else [
            (x, _fmt(x)) for x in np.linspace(self.x0, self.x1, 5)]
        for i, (x, label) in enumerate(ticks):
            edge = "start" if i == 0 else "end"
            anchor = "middle" if xticks is not None or 0 < i < len(ticks) - 1 else edge
            out.append(f"<text x='{self.px(x):.1f}' y='{PANEL_H - MB + 12}' text-anchor='{anchor}'>"
                       f"{e(label)}</text>")
        out += self.parts
        lx = PANEL_W - MR - 4
        for i, (label, color) in enumerate(legend):
            y = (PANEL_H - MB - 6 - 12 * (len(legend) - 1 - i)) if legend_at_bottom else MT + 12 + 12 * i
            out.append(f"<text x='{lx - 12}' y='{y}' text-anchor='end'>{e(label)}</text>"
                       f"<rect x='{lx - 9}' y='{y - 7}' width='8' height='8' fill='{color}'/>")
        out.append("</svg>")
        return "".join(out)


def _plot_numeric(f: FeatureDrift, ref: np.ndarray, cur: np.ndarray) -> str:
    both = np.concatenate([ref, cur])
    lo, hi = (float(v) for v in np.quantile(both, [0.005, 0.995]))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    if np.all(np.mod(both, 1) == 0) and hi - lo <= 40:  # small integer counts: one bin per value
        lo, hi = lo - 0.5, hi + 0.5
        bins = np.arange(lo, hi + 0.5)
    else:
        bins = np.linspace(lo, hi, 31)
    hist = [np.histogram(np.clip(v, lo, hi), bins=bins, density=True)[0] for v in (ref, cur)]
    left = _Panel("distribution (density; tails beyond 0.5-99.5% clipped)", lo, hi, 0.0,
                  float(max(h.max() for h in hist)) * 1.1)
    xs = np.repeat(bins, 2)[1:-1]
    for h, color in zip(hist, (REF_COLOR, CUR_COLOR), strict=True):
        left.polyline(xs, np.repeat(h, 2), color, fill=True)
    grid = np.unique(np.quantile(both, np.linspace(0, 1, 257)))
    cdf = [np.searchsorted(np.sort(v), grid, side="right") / len(v) for v in (ref, cur)]
    right = _Panel("cumulative share (KS statistic = largest gap)", float(grid[0]), float(grid[-1]), 0.0, 1.0)
    for c, color in zip(cdf, (REF_COLOR, CUR_COLOR), strict=True):
        right.polyline(np.repeat(grid, 2)[1:], np.repeat(c, 2)[:-1], color)
    k = int(np.argmax(np.abs(cdf[0] - cdf[1])))
    right.vline(float(grid[k]), float(cdf[0][k]), float(cdf[1][k]), GAP_COLOR)
    legend = [("reference", REF_COLOR), ("current", CUR_COLOR)]
    return left.render(legend) + right.render([*legend, (f"gap {f.statistic:.3f}", GAP_COLOR)],
                                              legend_at_bottom=True)


def _plot_categorical(ref: pd.Series, cur: pd.Series) -> str:
    p = ref.astype(str).value_counts(normalize=True)
    q = cur.astype(str).value_counts(normalize=True)
    cats = list(p.index.union(q.index))
    panel = _Panel("share of rows per category", -0.5, len(cats) - 0.5, 0.0,
                   float(max(p.max(), q.max())) * 1.1)
    for i, c in enumerate(cats):
        panel.rect(i - 0.4, 0.4, float(p.get(c, 0.0)), REF_COLOR)
        panel.rect(i, 0.4, float(q.get(c, 0.0)), CUR_COLOR)
    ticks = [(float(i), c if len(c) <= 14 else c[:13] + "…") for i, c in enumerate(cats)]
    return panel.render([("reference", REF_COLOR), ("current", CUR_COLOR)], xticks=ticks)


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px} .badge{padding:3px 10px;border-radius:4px;color:#fff;font-weight:600}
.drift{background:#c44e52} .no_drift{background:#55a868} .not_enough_data{background:#8c8c8c}
table{border-collapse:collapse;font-size:13px;margin:12px 0}
td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left} tr.d td{background:#fbeaea;font-weight:600}
.feature{margin:18px 0;padding:8px;border:1px solid #ddd;border-radius:6px} .feature.d{border-color:#c44e52}
.feature h3{font-size:14px;margin:4px 0} .meta{font-size:13px;color:#555}
"""


PLOT_ROWS = 50_000


def _plot_sample(frame: pd.DataFrame) -> pd.DataFrame:
    return frame if len(frame) <= PLOT_ROWS else frame.sample(PLOT_ROWS, random_state=0)


def render_html(result: DriftResult, reference: pd.DataFrame | None, current: pd.DataFrame | None) -> str:
    e = html.escape
    status = result.status
    head = [
        "<!doctype html><html><head><meta charset='utf-8'><title>churnops drift report</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Drift report <span class='badge {status}'>{e(STATUS_TEXT[status])}</span></h1>",
        f"<p>{e(result.message)}</p>",
        "<p class='meta'>"
        f"checked {e(_when(result.created_at))}; window {result.window_size} rows "
        f"({e(_source_text(result.source))}); reference {result.reference_size} rows of model version "
        f"{e(str(result.reference_version or '-'))}; backend {e(result.backend)}; "
        f"{e(result.config.correction)} correction at p = {result.config.p_value}"
        + (f" (per-feature threshold {result.threshold:.3g})" if result.threshold is not None else "")
        + f"; effect-size floors: numeric shift {result.config.min_shift_sd} standard deviations "
        f"(Wasserstein-1 / reference std), category shift {result.config.min_category_shift} "
        "(total variation); "
        f"minimum window {result.config.min_window} rows.</p>",
    ]
    body: list[str] = []
    if result.features:
        body.append("<table><tr><th>feature</th><th>test</th><th>statistic</th><th>p-value</th>"
                    "<th>effect size</th><th>floor</th><th>verdict</th></tr>")
        for f in _ordered(result.features):
            verdict = "drift" if f.drift else ("significant, below floor" if f.significant else "ok")
            body.append(f"<tr class='{'d' if f.drift else ''}'><td>{e(f.feature)}</td><td>{f.test}</td>"
                        f"<td>{f.statistic:.4g}</td><td>{f.p_value:.3g}</td><td>{f.effect_size:.3f}</td>"
                        f"<td>{f.effect_floor:.2f}</td><td>{verdict}</td></tr>")
        body.append("</table><p class='meta'>Effect size: numeric features, how far the values moved on "
                    "average in reference standard deviations (Wasserstein-1 distance / reference std); "
                    "categorical features, the share of rows that would have to change category (total "
                    "variation distance). A feature drifts when its p-value is below the threshold and its "
                    "effect size reaches the floor.</p>")
        if reference is not None and current is not None:
            reference, current = _plot_sample(reference), _plot_sample(current)
            if max(result.window_size, result.reference_size) > PLOT_ROWS:
                body.append(f"<p class='meta'>Plots are drawn from a random sample of at most {PLOT_ROWS:,} "
                            "rows "
                            "per side; every statistic above uses all rows.</p>")
            for f in _ordered(result.features):
                if f.kind == "numeric":
                    img = _plot_numeric(f, reference[f.feature].to_numpy(dtype=np.float64),
                                        current[f.feature].to_numpy(dtype=np.float64))
                else:
                    img = _plot_categorical(reference[f.feature], current[f.feature])
                body.append(
                    f"<div class='feature {'d' if f.drift else ''}'><h3>{e(f.feature)} "
                    f"&mdash; {'DRIFT' if f.drift else 'ok'}</h3><p class='meta'>{f.test} statistic "
                    f"{f.statistic:.4g}, p-value {f.p_value:.3g}, effect size {f.effect_size:.3f} "
                    f"(floor {f.effect_floor})</p><div class='plot' role='img' aria-label='{e(f.feature)}'>"
                    f"{img}</div></div>")
    return "\n".join([*head, *body, "</body></html>\n"])


def write_reports(result: DriftResult, out_dir: Path, reference: pd.DataFrame | None = None,
                  current: pd.DataFrame | None = None, extra: dict[str, Any] | None = None
                  ) -> tuple[Path, Path]:
    """Write ``drift.json`` and ``drift.html`` into ``out_dir`` (atomically) and return both paths."""
    out_dir = Path(out_dir)
    json_path, html_path = out_dir / "drift.json", out_dir / "drift.html"
    doc = {**result.to_dict(), **(extra or {}), "reports": {"json": str(json_path), "html": str(html_path)}}
    write_text_atomic(html_path, render_html(result, reference, current))
    write_json_atomic(json_path, doc)
    log.info("drift.report_written", json=str(json_path), html=str(html_path))
    return json_path, html_path
