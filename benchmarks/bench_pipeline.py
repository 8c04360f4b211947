"""Wall time and peak memory of the whole training pipeline (`churnops train --data`) on generated tables.

    .venv/bin/python benchmarks/bench_pipeline.py [--rows 10000 100000 1000000] [--params params.yaml]
        [--code-root DIR] [--label new] [--out results.json]
    .venv/bin/python benchmarks/bench_pipeline.py --plot benchmarks/pipeline_scaling.png \
        --curve "before #13=benchmarks/pipeline_before_13.json" --curve "after #13=results.json"

For each size: a fresh project home in a temporary directory (params.yaml with its real search budget, the
repo's dvc.yaml, a git repository, a local DVC remote, a SQLite MLflow store), a generated table (seed 11),
and one `churnops train --data` run timed from outside: DVC add + push, validate, featurize, train (every
candidate's search and refit), evaluate, register. Prints per size: wall time, CPU seconds of the run's
process tree, its peak resident memory (the sum over the tree, sampled every 0.2 s), the train stage's
seconds, the best candidate's hold-out metrics, and the load average before and after (the machine may be
shared: a figure measured under load says so).

``--code-root DIR`` runs another tree's code (``git archive <commit> src pipeline params.yaml dvc.yaml | tar
-x -C DIR``: "today's" pipeline) with its own params.yaml. ``--plot`` draws wall time and CPU seconds against
rows, one line per ``--curve LABEL=results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env(home: Path, code_root: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURNOPS_", "MLFLOW_"))}
    env.update(CHURNOPS_HOME=str(home), DVC_NO_ANALYTICS="1", PATH=f"{BIN}{os.pathsep}{env['PATH']}",
               TRANSFORMERS_VERBOSITY="error")
    if code_root is not None:
        env["PYTHONPATH"] = f"{code_root / 'src'}{os.pathsep}{code_root}"
    return env


class PeakMemory:
    """Samples the summed RSS of a process and its descendants every `every_s` seconds, in a thread."""

    def __init__(self, pid: int, every_s: float = 0.2) -> None:
        self.pid, self.every_s, self.peak = pid, every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            total = 0
            try:
                for proc in [root, *root.children(recursive=True)]:
                    try:
                        total += proc.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                return
            self.peak = max(self.peak, total)
            self._stop.wait(self.every_s)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def one(rows: int, params: Path, workdir: Path, code_root: Path | None) -> dict:
    home = workdir / f"home-{rows}"
    home.mkdir(parents=True)
    shutil.copy(params, home / "params.yaml")
    shutil.copy((code_root or REPO) / "dvc.yaml", home / "dvc.yaml")
    subprocess.run(["git", "init", "-q"], cwd=home, check=True)
    env = _env(home, code_root)
    subprocess.run([str(BIN / "churnops"), "data", "generate", "--rows", str(rows), "--seed", "11", "--out",
                    "incoming/customers.csv"], cwd=home, env=env, check=True, capture_output=True)
    load_before = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "churnops"), "train", "--data", "incoming/customers.csv", "--json"],
                            cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory = PeakMemory(proc.pid)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    peak = memory.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"churnops train failed at {rows} rows (exit {proc.returncode}):\n{err[-4000:]}")
    report = json.loads(out)
    best = report["candidates"][report["best_candidate"]]
    return {"rows": rows, "wall_s": round(wall, 1),
            "cpu_s": round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 1),
            "peak_rss_mb": round(peak / 2**20), "max_single_rss_mb": round(after.ru_maxrss / 1024),
            "best": report["best_candidate"], "roc_auc": round(best["roc_auc"], 4),
            "f1": round(best["f1"], 4), "training_s": report.get("training_seconds"),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()]}


def plot(curves: list[str], out: Path) -> None:
    """Wall time and CPU seconds (the process tree) against rows, one line per results file: on a shared
    machine the CPU seconds compare runs measured at different loads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for spec in curves:
        label, _, path = spec.partition("=")
        points = sorted(json.loads(Path(path).read_text())["results"], key=lambda r: r["rows"])
        for ax, key in zip(axes, ("wall_s", "cpu_s"), strict=True):
            xs, ys = [r["rows"] for r in points], [r[key] / 60 for r in points]
            ax.plot(xs, ys, marker="o", label=label)
            for r, y in zip(points, ys, strict=True):
                load = r.get("loadavg_after")
                note = f"{y:.1f} min" + (f"\nload {load[0]:.0f}" if load and key == "wall_s" else "")
                ax.annotate(note, (r["rows"], y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes[0].axhline(4, color="grey", lw=0.8, ls=":")
    axes[0].axhline(20, color="grey", lw=0.8, ls="--")
    axes[0].text(11_000, 4.3, "target 100k: 4 min (idle)", fontsize=7, color="grey")
    axes[0].text(11_000, 21.5, "target 1M: 20 min (idle)", fontsize=7, color="grey")
    axes[0].set(ylabel="wall time of churnops train --data (min)", title="wall time (load in labels)")
    axes[1].set(ylabel="CPU time of its process tree (min)", title="CPU time (steady under load)")
    for ax in axes:
        ax.set(xscale="log", yscale="log", xlabel="rows (generated customers)")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("Whole training pipeline on 2 cores")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"plot: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--params", type=Path, default=None, help="default: <code-root>/params.yaml")
    parser.add_argument("--code-root", type=Path, default=None, help="another tree's code")
    parser.add_argument("--label", default="this tree")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON (for --plot)")
    parser.add_argument("--plot", type=Path, default=None, help="draw --curve files instead of measuring")
    parser.add_argument("--curve", action="append", default=[], metavar="LABEL=results.json")
    args = parser.parse_args()
    if args.plot:
        plot(args.curve, args.plot)
        return
    code_root = args.code_root.resolve() if args.code_root else None
    params = args.params or (code_root or REPO) / "params.yaml"
    results = []
    with tempfile.TemporaryDirectory(prefix="churnops-bench-pipeline-") as tmp:
        for rows in args.rows:
            results.append(one(rows, params, Path(tmp), code_root))
            print(json.dumps(results[-1]), flush=True)
            if args.out:  # after each size: a long run that is stopped keeps what it measured
                args.out.write_text(json.dumps({"label": args.label, "results": results}, indent=2) + "\n")
    print(f"\n{'rows':>9} {'wall s':>8} {'cpu s':>8} {'peak MB':>8} {'train s':>8} {'best':>14} "
          f"{'roc_auc':>8} {'f1':>7} {'load':>10}")
    for r in results:
        print(f"{r['rows']:>9,} {r['wall_s']:>8} {r['cpu_s']:>8} {r['peak_rss_mb']:>8} "
              f"{r['training_s']!s:>8} {r['best']:>14} {r['roc_auc']:>8} {r['f1']:>7} "
              f"{r['loadavg_before'][0]:>4.1f}-{r['loadavg_after'][0]:<4.1f}")
    print(f"{os.cpu_count()} cores")


if __name__ == "__main__":
    main()
