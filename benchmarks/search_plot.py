"""The search benchmark's picture: each method's confirmed best against the number of evaluations it has spent (the
median over its searches, with the interquartile range as a band), from search_stats.summarise()'s output."""

from __future__ import annotations

from pathlib import Path

COLOURS = {"evo": "crimson", "autoresearch": "#e08a1e", "random": "#7f9cbf", "tpe": "#2a9d3f"}


def plot_curves(summary: dict, out: Path, title: str) -> Path:
    """Draws summary ({method: {checkpoint: {"median", "q25", "q75", "n", ...}}}) into out (a PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    styles = iter(["--", ":", "-."] * 4)
    for method, rows in summary.items():
        ks = sorted(rows, key=int)
        x = [int(k) for k in ks]
        colour = COLOURS.get(method.split("[")[0])
        style = next(styles) if "[" in method else "-"          # evo's variants: its colour, another line
        ax.plot(x, [rows[k]["median"] for k in ks], marker="o", color=colour, linestyle=style,
                label=f"{method} (n={max(rows[k]['n'] for k in ks)})")
        ax.fill_between(x, [rows[k]["q25"] for k in ks], [rows[k]["q75"] for k in ks], color=colour, alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({int(k) for rows in summary.values() for k in rows}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("evaluations spent (every training run a method caused)")
    ax.set_ylabel("confirmed best val_bpb (lower is better)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
