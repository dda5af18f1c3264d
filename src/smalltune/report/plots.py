"""The report's plots: matplotlib figures returned as inline SVG strings.

SVG keeps the page self-contained and sharp at any zoom; glyphs are drawn as paths
(``svg.fonttype = "path"``) so no font is fetched. Each function returns ``None`` when it has
nothing to draw, and the template then shows a sentence instead of an empty chart.
"""

from __future__ import annotations

import io
import re

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402

from .load import Curves  # noqa: E402

BASE, TUNED, TRAIN, VALID, BEST, GUARD = "#8a8f98", "#1f6feb", "#d97706", "#1f6feb", "#15803d", "#b91c1c"
STYLE = {
    "svg.fonttype": "path", "text.parse_math": False,  # user labels may contain "$"
    "font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3, "figure.dpi": 100,
}


def _svg(fig, name: str) -> str:
    """Serialise ``fig`` to an ``<svg>`` element tagged with its plot name (the page check counts them)."""
    buf = io.StringIO()
    with plt.rc_context({"svg.hashsalt": name}):  # stable ids: the same run gives the same page
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    return re.sub(r"^<svg\b", f'<svg class="plot" data-plot="{name}" role="img" aria-label="{name} plot"', text, count=1)


def _mark_steps(axes, best_step, events) -> None:
    """The chosen checkpoint (green dashed) and guard events (red dotted) on every panel."""
    for ax in axes:
        if best_step is not None:
            ax.axvline(best_step, color=BEST, ls="--", lw=1.2, label="chosen checkpoint" if ax is axes[0] else None)
        for i, e in enumerate(events):
            if isinstance(e.step, (int, float)):
                label = "guard event" if ax is axes[0] and i == 0 else None
                ax.axvline(e.step, color=GUARD, ls=":", lw=1.2, label=label)
    top = axes[0]
    for e in events:
        if isinstance(e.step, (int, float)):
            top.annotate(str(e.guard or e.lookup("name") or "guard"), (e.step, 1), xycoords=("data", "axes fraction"),
                         xytext=(-3, -10), textcoords="offset points", color=GUARD, fontsize=8, ha="right")


def training_curves(curves: Curves | None, best_step=None) -> str | None:
    """Train and validation loss, their gap, and the learning rate against the optimizer step."""
    if curves is None or not (curves.train or curves.evals):
        return None
    with plt.rc_context(STYLE):
        fig, (loss_ax, gap_ax, lr_ax) = plt.subplots(3, 1, figsize=(8, 6.6), sharex=True,
                                                     gridspec_kw={"height_ratios": [3, 1.4, 1.2]})
        steps, loss = curves.series("train", "loss")
        if steps:
            loss_ax.plot(steps, loss, color=TRAIN, alpha=0.35, lw=0.9, label="train loss (per step)")
        es, tl = curves.series("evals", "train_loss")
        if es:
            loss_ax.plot(es, tl, color=TRAIN, lw=1.8, marker="o", ms=3, label="train loss (mean since last eval)")
        vs, vl = curves.series("evals", "eval_loss")
        if vs:
            loss_ax.plot(vs, vl, color=VALID, lw=1.8, marker="o", ms=3, label="validation loss")
        loss_ax.set_ylabel("loss")
        gaps = [(r.step, r.eval_loss - r.train_loss) for r in curves.evals
                if isinstance(r.eval_loss, (int, float)) and isinstance(r.train_loss, (int, float))]
        if gaps:
            gap_ax.bar([s for s, _ in gaps], [g for _, g in gaps], width=_bar_width([s for s, _ in gaps]),
                       color=[GUARD if g > 0 else BEST for _, g in gaps], alpha=0.7)
            gap_ax.axhline(0, color="black", lw=0.6)
        else:
            gap_ax.text(0.5, 0.5, "no evaluation with both losses", transform=gap_ax.transAxes, ha="center", color=BASE)
        gap_ax.set_ylabel("gap\n(val − train)")
        ls, lr = curves.series("train", "lr")
        if ls:
            lr_ax.plot(ls, lr, color="#6b21a8", lw=1.4)
        lr_ax.set_ylabel("learning rate")
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        lr_ax.set_xlabel("optimizer step")
        _mark_steps([loss_ax, gap_ax, lr_ax], best_step, curves.guard_events)
        loss_ax.legend(loc="best", fontsize=8, framealpha=0.85)
        fig.align_ylabels()
        return _svg(fig, "training-curves")


def checkpoint_metrics(curves: Curves | None, best_step=None) -> str | None:
    """Validation token accuracy and perplexity per evaluation: accuracy flat while perplexity climbs
    is over-memorization ("Unveiling Over-Memorization in Finetuning LLMs for Reasoning Tasks",
    arXiv:2508.04117)."""
    if curves is None:
        return None
    acc_s, acc = curves.series("evals", "eval_token_acc")
    ppl_s, ppl = curves.series("evals", "eval_ppl")
    if not (acc_s or ppl_s):
        return None
    with plt.rc_context(STYLE):
        fig, (acc_ax, ppl_ax) = plt.subplots(1, 2, figsize=(8, 2.8), sharex=True)
        acc_ax.plot(acc_s, [a * 100 for a in acc], color=BEST, marker="o", ms=3)
        acc_ax.set_ylabel("token accuracy (%)")
        ppl_ax.plot(ppl_s, ppl, color=GUARD, marker="o", ms=3)
        ppl_ax.set_ylabel("perplexity")
        for ax in (acc_ax, ppl_ax):
            ax.set_xlabel("optimizer step")
        _mark_steps([acc_ax, ppl_ax], best_step, curves.guard_events)
        fig.tight_layout()
        return _svg(fig, "checkpoint-metrics")


def before_after(rows: list[dict], name: str) -> str | None:
    """Base model vs fine-tuned, one small panel per metric: metrics differ in scale (a perplexity
    of 20 beside an accuracy of 0.6), so each gets its own axis."""
    rows = [r for r in rows if isinstance(r.get("base"), (int, float)) and isinstance(r.get("finetuned"), (int, float))]
    if not rows:
        return None
    cols = min(len(rows), 3)
    nrows = -(-len(rows) // cols)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, cols, figsize=(8, 1.25 * nrows + 0.2), squeeze=False)
        for ax, r in zip(axes.flat, rows):
            ax.barh([1, 0], [r["base"], r["finetuned"]], height=0.6, color=[BASE, TUNED])
            ax.set_yticks([1, 0], ["base", "fine-tuned"])
            ax.set_title(_short(r["name"], 40), fontsize=9, loc="left")
            for y, v in ((1, r["base"]), (0, r["finetuned"])):
                ax.annotate(f"{v:.3g}", (v, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
            ax.margins(x=0.18)
            if min(r["base"], r["finetuned"]) >= 0:  # rates and losses start at 0; an all-zero pair keeps a 0-1 axis
                ax.set_xlim(0, max(r["base"], r["finetuned"]) * 1.2 or 1)
            ax.grid(axis="y", visible=False)
        for ax in list(axes.flat)[len(rows):]:
            ax.set_visible(False)
        fig.tight_layout()
        return _svg(fig, name)


def robustness(rows: list[dict]) -> str | None:
    """Score on clean prompts vs perturbed prompts, one pair of bars per perturbation."""
    rows = [{"name": r["name"], "base": r.get("clean"), "finetuned": r.get("perturbed")} for r in rows]
    rows = [r for r in rows if isinstance(r["base"], (int, float)) and isinstance(r["finetuned"], (int, float))]
    if not rows:
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 0.9 + 0.55 * len(rows)))
        ys = range(len(rows))
        ax.barh([y + 0.2 for y in ys], [r["base"] for r in rows], height=0.38, color=BASE, label="clean prompts")
        ax.barh([y - 0.2 for y in ys], [r["finetuned"] for r in rows], height=0.38, color=TUNED, label="perturbed prompts")
        ax.set_yticks(list(ys), [_short(r["name"]) for r in rows])
        ax.invert_yaxis()
        ax.set_xlabel("score (fine-tuned model)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        fig.tight_layout()
        return _svg(fig, "robustness")


def _bar_width(steps: list[float]) -> float:
    if len(steps) < 2:
        return 1.0
    return 0.6 * min(b - a for a, b in zip(steps, steps[1:]) if b > a) if len(set(steps)) > 1 else 1.0


def _short(text: str, n: int = 28) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"
