"""`evo plot`: pictures of a run from its store rows.

In:  a StoreReader, the path of the progress picture (progress.png), and a run id (default: the latest run).
Out: two PNGs, and their paths:
    progress.png          autoresearch's progress plot made for a population: every evaluation over time by purpose,
                          failures as x along the top edge, the running confirmed best, the winner's path labelled
    progress_lineage.png  the lineage tree by birth order and generation, nodes coloured by mean val_bpb, the
                          winner's path highlighted
StoreError, one line, for a store without runs, an unknown run, or a run with no evaluations.

The winner is the leaderboard's best member of the population (lowest score in the fitness view), or the best
overall when no population was recorded; its path follows `parent` edges (first parents) back to the seed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from evo.errors import StoreError
from evo.fitness import SCORED_PURPOSES
from evo.store.reader import StoreReader
from evo.text import one_line

MARKERS = {"search": ("o", "#7f9cbf", 22), "confirm": ("s", "#2a9d3f", 40), "noise": ("D", "#e08a1e", 34),
           "replay": ("P", "#8e5bb5", 40)}
PATH = "crimson"
DPI = 110
LABEL_SIZE = 7.5
MAX_LABELS = 12  # a longer path labels its seed, its winner and its biggest improvements


def plot_run(reader: StoreReader, out: str | Path, run_id: str | None = None) -> list[Path]:
    """Draws run_id (default: the latest run) into `out` and `<stem>_lineage.png` beside it (directories are made);
    returns [progress path, lineage path]. Puts matplotlib on the Agg backend, which closes pyplot figures open
    under another backend."""
    run = reader.load_run(run_id) if run_id is not None else reader.latest_run()
    if run is None:
        raise StoreError(f"{reader.path.name} has no runs to plot")
    evaluations = sorted(reader.evaluations(run.run_id), key=lambda e: (e.finished_at, e.id))
    if not evaluations:
        raise StoreError(f"run {run.run_id} has no evaluations to plot")
    individuals = {i.id: i for i in reader.individuals(run.run_id)}
    ranked = reader.fitness(run.run_id)
    fitness = {f.individual_id: f for f in ranked}
    path = _winner_path(individuals, ranked)

    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    out = Path(out)
    lineage_out = out.with_name(f"{out.stem}_lineage.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    figures = [(_draw_progress(run, evaluations, individuals, fitness, path), out),
               (_draw_lineage(run, individuals, fitness, path), lineage_out)]
    for figure, target in figures:
        try:
            figure.savefig(target, format="png", dpi=DPI, bbox_inches="tight")
        finally:
            plt.close(figure)
    return [out, lineage_out]


def _winner_path(individuals: dict, ranked: list) -> list[str]:
    """Ids from the seed to the winner along first parents; empty when nothing has a fitness row."""
    members = [f for f in ranked if individuals[f.individual_id].in_population] or ranked
    path, id = [], members[0].individual_id if members else None
    while id is not None and id not in path:
        path.append(id)
        parents = individuals[id].parents
        id = parents[0] if parents else None
    return path[::-1]


def _scored(e) -> bool:
    return e.status == "ok" and e.val_bpb is not None and e.purpose in SCORED_PURPOSES


def _running_best(evaluations: list) -> tuple[list, list, list]:
    """After each scored evaluation (in time order): (evaluation, best, confirmed). best is the lowest mean val_bpb
    among individuals with a confirm or noise evaluation so far (confirmed), or before any, among all of them."""
    sums, counts, confirmed, best = {}, {}, set(), None  # best: (mean, id)
    rows = []
    for e in filter(_scored, evaluations):
        i = e.individual_id
        sums[i], counts[i] = sums.get(i, 0.0) + e.val_bpb, counts.get(i, 0) + 1
        first_confirmation = e.purpose != "search" and not confirmed
        if e.purpose != "search":
            confirmed.add(i)
        pool, mean = confirmed or counts, sums[i] / counts[i]
        # A new pool, or the best itself got worse: look again.
        if first_confirmation or (best is not None and best[1] == i and mean > best[0]):
            best = min((sums[j] / counts[j], j) for j in pool)
        elif i in pool and (best is None or mean < best[0]):
            best = (mean, i)
        rows.append((e, best[0], bool(confirmed)))
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def _value_range(values: list[float], keep: list[float] = ()) -> tuple[float, float]:
    """The val_bpb span to show: up to Tukey's fence (1.5 interquartile ranges above the upper quartile), since one
    diverged child at bpb 9 would flatten everything else; never cutting the values in keep."""
    v = np.asarray(values, dtype=float)
    q1, q3 = np.percentile(v, [25, 75])
    lo, hi = float(min([v.min(), *keep])), float(max([min(v.max(), q3 + 1.5 * (q3 - q1)), *keep]))
    return (lo - 0.005, hi + 0.005) if hi - lo < 1e-6 else (lo, hi)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _label(individual) -> str:
    """An individual's label on the plots: its operator and the first line of its description, control characters
    escaped (evo.text) and `$` kept literal (matplotlib would read text between two of them as math)."""
    description = (individual.description or "").strip().split("\n")[0]
    if len(description) > 40:
        description = description[:39] + "…"
    label = f"{individual.operator}: {description}" if description else individual.operator
    return one_line(label).replace("$", r"\$")


def _draw_progress(run, evaluations, individuals, fitness, path):
    import matplotlib.pyplot as plt

    def minutes(e):
        return (e.finished_at - run.started_at).total_seconds() / 60
    ok = [e for e in evaluations if e.status == "ok" and e.val_bpb is not None]
    failed = [e for e in evaluations if not (e.status == "ok" and e.val_bpb is not None)]
    fig, ax = plt.subplots(figsize=(13, 7), dpi=DPI)
    end = max(minutes(e) for e in evaluations)
    ax.set_xlim(-0.02 * max(end, 1e-3), end * 1.03 + 1e-3)  # before the labels: they are laid out in pixels
    if ok:
        best_at, best, confirmed = _running_best(evaluations)
        firsts = {}
        for e in filter(_scored, evaluations):
            firsts.setdefault(e.individual_id, e)
        steps = [firsts[i] for i in path if i in firsts]
        lo, hi = _value_range([e.val_bpb for e in ok], keep=best + [e.val_bpb for e in steps])
        for purpose, (marker, colour, size) in MARKERS.items():
            shown = [e for e in ok if e.purpose == purpose and e.val_bpb <= hi]
            if shown:
                ax.scatter([minutes(e) for e in shown], [e.val_bpb for e in shown], marker=marker, s=size, c=colour,
                           alpha=0.75, linewidths=0, label=f"{purpose} ({len(shown)})", zorder=2)
        above = [e for e in ok if e.val_bpb > hi]
        if above:
            ax.scatter([minutes(e) for e in above], [hi] * len(above), marker="^", s=30, c="0.45", zorder=2,
                       label=f"{len(above)} above {hi:.3f}: drawn at {hi:.3f}" + ", value beside" * (len(above) <= 8))
            for e in above[:8] if len(above) <= 8 else ():
                ax.annotate(f"{e.val_bpb:.2f}", (minutes(e), hi), xytext=(5, -3), textcoords="offset points",
                            fontsize=7, color="0.35")
        _draw_best(ax, [minutes(e) for e in best_at], best, confirmed, end)
        _draw_path(ax, steps, individuals, fitness, minutes, lo, hi)
        ax.set_ylabel("val_bpb (lower is better)")
    else:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no successful evaluation yet", transform=ax.transAxes, ha="center", color="0.4")
    if failed:
        statuses = ", ".join(f"{n} {s}" for s, n in Counter(e.status for e in failed).most_common())
        ax.plot([minutes(e) for e in failed], [0.985] * len(failed), "x", color="black", ms=6, clip_on=False,
                transform=ax.get_xaxis_transform(), label=one_line(f"not ok, along the top: {statuses}"), zorder=5)
    ax.set_xlabel("minutes since the run started")
    ax.grid(alpha=0.25)
    winner = fitness.get(path[-1]) if path else None
    title = (f"evo run {run.run_id}: {_count(len(evaluations), 'evaluation')} of "
             f"{_count(len({e.individual_id for e in evaluations}), 'individual')} over {end:.1f} min")
    if winner:
        title += (f"\nwinner {winner.individual_id[:12]}: mean val_bpb {winner.mean_bpb:.4f} over "
                  f"{_count(winner.n, 'evaluation')} (score {winner.score:.4f})")
    ax.set_title(title, fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def _draw_best(ax, at, best, confirmed, end) -> None:
    """The running best as a step line: dashed while nothing is confirmed, solid after."""
    at, best = np.asarray(at), np.asarray(best)
    first = confirmed.index(True) if True in confirmed else len(at)
    if first > 0:
        until = at[first] if first < len(at) else end
        ax.step(np.append(at[:first], until), np.append(best[:first], best[first - 1]), where="post", ls="--",
                color="0.35", lw=1.3, label="best search value (nothing confirmed yet)", zorder=3)
    if first < len(at):
        ax.step(np.append(at[first:], end), np.append(best[first:], best[-1]), where="post", color="black", lw=2,
                label="confirmed best (mean val_bpb, confirm/noise evaluated)", zorder=3)


def _draw_path(ax, steps, individuals, fitness, minutes, lo, hi) -> None:
    """Rings the winner's path at each step's first scored evaluation, and hangs the changes' labels in rows above
    the points on vertical leader lines. Sets the y limits, leaving room for the rows."""
    bottom = lo - 0.05 * (hi - lo)
    if not steps:
        ax.set_ylim(bottom, hi + 0.08 * (hi - bottom))
        return
    xs, ys = [minutes(e) for e in steps], [min(e.val_bpb, hi) for e in steps]
    ax.plot(xs, ys, ls=":", lw=1, color=PATH, marker="o", ms=11, mfc="none", mew=1.5, zorder=4,
            label="winner's path (first parents)")
    keep = list(range(len(steps)))
    if len(steps) > MAX_LABELS:
        def mean(k):
            return fitness[steps[k].individual_id].mean_bpb
        gains = sorted(range(1, len(steps) - 1), key=lambda k: mean(k - 1) - mean(k), reverse=True)
        keep = sorted({0, len(steps) - 1, *gains[:MAX_LABELS - 2]})
    texts = [_label(individuals[steps[k].individual_id]) for k in keep]
    rows, aligns, height = _label_rows(ax, [xs[k] for k in keep], texts)
    top_margin, band = 16, (max(rows) + 1) * height + 24  # pixels: the failures' x marks, then the label rows
    ax.set_ylim(bottom, bottom + (hi - bottom) / (1 - band / ax.bbox.height))
    for k, text, row, align in zip(keep, texts, rows, aligns):
        y = 1 - (top_margin + (max(rows) - row + 0.5) * height) / ax.bbox.height
        ax.annotate(text, xy=(xs[k], ys[k]), xytext=(xs[k], y), textcoords=ax.get_xaxis_transform(), ha=align,
                    va="center", fontsize=LABEL_SIZE, color=PATH, zorder=6,
                    bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.85),
                    arrowprops=dict(arrowstyle="-", color=PATH, lw=0.6, alpha=0.6,
                                    relpos=(0, 0.5) if align == "left" else (1, 0.5)))


def _label_rows(ax, xs, texts) -> tuple[list[int], list[str], float]:
    """Rows (0 nearest the points), alignments and the row height in pixels for labels hung above points at xs:
    labels in a row never overlap, and where it can be helped no leader line runs through another label."""
    renderer = ax.figure.canvas.get_renderer()
    probe = ax.text(0, 0, "", fontsize=LABEL_SIZE)
    placed, rows, aligns, height = [], [0] * len(xs), [""] * len(xs), 0.0
    for k in sorted(range(len(xs)), key=lambda k: -xs[k]):  # right to left: most lines then start to the right
        probe.set_text(texts[k])
        extent = probe.get_window_extent(renderer)
        x, width, height = ax.transData.transform((xs[k], 0))[0], extent.width + 8, max(height, extent.height * 1.6)
        left, right, aligns[k] = (x, x + width, "left") if x + width <= ax.bbox.x1 else (x - width, x, "right")

        def fits(row, strict=True):
            return all(not (r == row and a < right and left < b) and not (
                strict and ((left <= px <= right and r >= row) or (a <= x <= b and r <= row)))
                for r, px, a, b in placed)

        rows[k] = next((r for r in range(2 * len(xs)) if fits(r)), None)
        if rows[k] is None:
            rows[k] = next(r for r in range(len(xs) + 1) if fits(r, strict=False))
        placed.append((rows[k], x, left, right))
    probe.remove()
    return rows, aligns, height


def _draw_lineage(run, individuals, fitness, path):
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(13, 7), dpi=DPI)
    nodes = [i for i in individuals.values() if i.id in fitness]  # birth order
    unevaluated = len(individuals) - len(nodes)
    title = f"evo run {run.run_id}: lineage of {_count(len(nodes), 'evaluated individual')}"
    if unevaluated:
        title += f" ({unevaluated} without a successful evaluation not shown)"
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("birth order")
    ax.set_ylabel("generation")
    if not nodes:
        ax.text(0.5, 0.5, "no successful evaluation yet", transform=ax.transAxes, ha="center", color="0.4")
        ax.set_xticks([])
        ax.set_yticks([])
        return fig
    at = {i.id: (i.birth, i.generation) for i in nodes}
    path_edges = set(zip(path, path[1:]))
    edges = {"parent": [], "second parent (merge)": [], "winner's path": []}
    for child in nodes:
        for role, parent in zip(("parent", "second parent (merge)"), child.parents):
            if parent in at:
                on_path = role == "parent" and (parent, child.id) in path_edges
                edges["winner's path" if on_path else role].append([at[parent], at[child.id]])
    styles = {"parent": dict(colors="0.6", linewidths=0.8), "winner's path": dict(colors=PATH, linewidths=2.5),
              "second parent (merge)": dict(colors="0.45", linewidths=0.8, linestyles=(0, (4, 3)))}
    for name, segments in edges.items():
        if segments:
            ax.add_collection(LineCollection(segments, label=name, zorder=2 if name == "winner's path" else 1,
                                             **styles[name]))
    values = [fitness[i.id].mean_bpb for i in nodes]
    lo, hi = _value_range(values)
    size = float(np.clip(12000 / len(nodes), 12, 55))  # smaller dots for a crowded tree
    dots = ax.scatter([i.birth for i in nodes], [i.generation for i in nodes], c=values, cmap="viridis_r",
                      norm=Normalize(lo, hi), s=size, edgecolors="white", linewidths=0.5, zorder=3)
    marked = [at[i] for i in path if i in at]
    ax.scatter([p[0] for p in marked], [p[1] for p in marked], s=130, facecolors="none", edgecolors=PATH,
               linewidths=2, zorder=4)
    if path and path[-1] in at:
        ax.annotate(f"winner {path[-1][:8]}: {fitness[path[-1]].mean_bpb:.4f}", xy=at[path[-1]], xytext=(-10, 10),
                    textcoords="offset points", ha="right", fontsize=8, color=PATH, zorder=5,
                    bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.8))
    fig.colorbar(dots, ax=ax, extend="max" if max(values) > hi else "neither", pad=0.02,
                 label="mean val_bpb (lower is better)")
    births, generations = [i.birth for i in nodes], [i.generation for i in nodes]
    pad = max(1.0, 0.03 * (max(births) - min(births)))  # whole-number spans: a lone seed gets no 0.96 ticks
    ax.set_xlim(min(births) - pad, max(births) + pad)
    ax.set_ylim(max(generations) + 0.7, min(generations) - 0.7)  # the seed at the top, as in a family tree
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(alpha=0.2)
    if any(edges.values()):
        ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    return fig
