"""The report's plots, one function each, drawn with matplotlib (Agg) into PNG files.

Each function takes plain numbers (already read from result dirs by ``build.py``), writes ``path`` and returns
it, or returns None when there is nothing to draw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    import io as bytes_io

    from safealign import io

    buf = bytes_io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, dpi=110, format="png")
    _pyplot().close(fig)
    io.write_bytes(path, buf.getvalue())
    return path


def safety_vs_samples(points: list[dict[str, Any]], path: Path) -> Path | None:
    """SIT sweep: safe % per harmful benchmark (and their mean) against the number of safety samples.

    points: [{"n": int, "safe": {benchmark: percent}, "over_refusal": percent | None}], n = 0 for the base model.
    """
    points = sorted(points, key=lambda p: p["n"])
    if len(points) < 2 or not any(p["safe"] for p in points):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = [p["n"] for p in points]
    benches = sorted({b for p in points for b in p["safe"]})
    for b in benches:
        ax.plot(xs, [p["safe"].get(b) for p in points], marker="o", lw=1, alpha=0.6, label=b)
    means = [sum(p["safe"].values()) / len(p["safe"]) if p["safe"] else None for p in points]
    ax.plot(xs, means, marker="o", lw=2.5, color="black", label="mean (harmful)")
    if any(p.get("over_refusal") is not None for p in points):
        ax.plot(xs, [p.get("over_refusal") for p in points], marker="s", lw=1.5, ls="--", color="tab:red",
                label="XSTest over-refusal")
    ax.set_xlabel("safety samples added to training (SIT n; 0 = base)")
    ax.set_ylabel("%")
    ax.set_ylim(-2, 102)
    ax.set_title("Safe responses vs number of safety samples")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def raft_iterations(rows: list[dict[str, Any]], path: Path, helpful_name: str = "helpfulness") -> Path | None:
    """RAFT: safe % and helpfulness per iteration.

    rows: [{"iteration": int, "safe": percent | None (eval, mean over harmful benchmarks),
            "helpful": float | None (eval), "kept_safe": percent | None (training samples kept, by the
            independent judge), "mean_score": float | None (ranker score of the samples)}]
    """
    rows = sorted(rows, key=lambda r: r["iteration"])
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    its = [r["iteration"] for r in rows]

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(r["iteration"], r[key]) for r in rows if r.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    x, y = series("safe")
    if x:
        ax.plot(x, y, marker="o", lw=2.5, color="tab:blue", label="safe % (eval, harmful mean)")
    x, y = series("kept_safe")
    if x:
        ax.plot(x, y, marker="^", lw=1.2, ls="--", color="tab:cyan", label="kept samples safe % (training)")
    ax.set_xlabel("RAFT iteration (0 = base)")
    ax.set_ylabel("safe %")
    ax.set_ylim(-2, 102)
    ax.set_xticks(sorted(set(its)))
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    x, y = series("helpful")
    if x:
        ax2.plot(x, y, marker="s", lw=2, color="tab:green", label=f"{helpful_name} (eval)")
    x, y = series("mean_score")
    if x:
        ax2.plot(x, y, marker="d", lw=1, ls=":", color="tab:olive", label="mean ranker score (training)")
    ax2.set_ylabel(f"{helpful_name} / ranker score")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="lower right")
    ax.set_title("RAFT: safety and helpfulness per iteration")
    return _save(fig, path)


def tradeoff(models: list[dict[str, Any]], path: Path, helpful_name: str = "helpfulness") -> Path | None:
    """Safety–helpfulness trade-off, one point per model, labelled with its over-refusal.

    models: [{"name", "safe": percent, "helpful": float | None, "over_refusal": percent | None}].
    Without helpfulness numbers the x axis is over-refusal instead.
    """
    pts = [m for m in models if m.get("safe") is not None]
    if not pts:
        return None
    use_helpful = all(m.get("helpful") is not None for m in pts)
    if not use_helpful and not all(m.get("over_refusal") is not None for m in pts):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [m["helpful"] if use_helpful else m["over_refusal"] for m in pts]
    ors = [m.get("over_refusal") for m in pts]
    colors = [o if o is not None else 0.0 for o in ors]
    sc = ax.scatter(xs, [m["safe"] for m in pts], c=colors, cmap="RdYlGn_r", vmin=0, vmax=max(30.0, max(colors)),
                    s=90, edgecolors="black", zorder=3)
    for i, (m, x) in enumerate(zip(pts, xs)):  # labels staggered so that close points stay readable
        label = m["name"] + (f" (over-refusal {m['over_refusal']:.0f}%)" if m.get("over_refusal") is not None else "")
        ax.annotate(label, (x, m["safe"]), textcoords="offset points", xytext=(6, 6 - 11 * (i % 3)), fontsize=7,
                    arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})
    if any(o is not None for o in ors):
        fig.colorbar(sc, ax=ax, label="over-refusal % (XSTest / benign)")
    ax.margins(x=0.3)  # room for the labels on the right
    ax.set_xlabel(helpful_name if use_helpful else "over-refusal %")
    ax.set_ylabel("safe % (mean over harmful benchmarks)")
    ax.set_ylim(min(-2, min(m["safe"] for m in pts) - 5), 105)
    ax.grid(alpha=0.3)
    ax.set_title("Safety vs helpfulness (colour: over-refusal)")
    return _save(fig, path)
