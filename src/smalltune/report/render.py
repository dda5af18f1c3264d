"""Turn :class:`RunResults` into the page's context and write ``report.html`` + ``report.md``.

The template gets plain rows and ready-made SVG strings; every piece of user text (questions,
answers, file names, messages) goes through jinja2's autoescaping. Only the SVGs we drew
ourselves are marked safe.
"""

from __future__ import annotations

import json
from pathlib import Path

from markupsafe import Markup

from ..rundir import RunDir, atomic_write_text
from ..schema import EvalRecord, Metric
from . import plots
from .load import RunResults, load_results

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
STATUS_ORDER = {"problem": 0, "warn": 1, "ok": 2}
CHECKPOINT_KEYS = ("step", "epoch", "train_loss", "eval_loss", "eval_ppl", "eval_token_acc")


def fmt(value) -> str:
    """A number or value as a person reads it: 4 significant digits, thousands separators, '—' for missing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:,.0f}" if abs(value) >= 1e5 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        if all(v is None for v in value):
            return "—"
        if len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
            return f"[{fmt(value[0])}, {fmt(value[1])}]"
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)[:200]
    return str(value)


def _num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compare_rows(probe, prefix: str = "") -> tuple[list[dict], list[dict]]:
    """Split a probe's section into base-vs-fine-tuned rows (its :class:`Metric` values) and other scalar facts.

    ``{"exact_match": {"base": .1, "finetuned": .6, "delta": .5}, "n": 72}`` gives one row for
    exact_match and one fact ``n = 72``; nested groups are flattened with dotted names.
    """
    rows, facts = [], []
    if not isinstance(probe, dict):
        return rows, facts
    for key, value in probe.items():
        name = f"{prefix}{key}"
        if (m := Metric.parse(value)) is not None:
            delta = m.delta
            if delta is None and _num(m.base) and _num(m.finetuned):
                delta = m.finetuned - m.base
            rows.append({"name": name, "base": m.base, "finetuned": m.finetuned, "delta": delta, "ci": m.ci, "n": m.n})
        elif isinstance(value, dict):
            sub_rows, sub_facts = compare_rows(value, f"{name}.")
            rows += sub_rows
            facts += sub_facts
        elif isinstance(value, (int, float, str, bool)) or value is None:
            facts.append({"name": name, "value": value})
    return rows, facts


def robustness_rows(probe) -> tuple[list[dict], list[dict]]:
    """One row per perturbation: score on clean and perturbed prompts and the drop.

    Accepts ``{"perturbations": {name: {...}}}`` or the perturbations at the top level; each of
    clean / perturbed / drop is a number or a base-vs-fine-tuned metric (the fine-tuned side is
    plotted, the base model's drop is shown beside it).
    """
    probe = probe if isinstance(probe, dict) else {}
    perts = probe.get("perturbations") if isinstance(probe.get("perturbations"), dict) else probe
    rows, facts = [], [{"name": k, "value": v} for k, v in probe.items() if not isinstance(v, (dict, list))]
    for name, value in perts.items():
        if not (isinstance(value, dict) and ("clean" in value or "perturbed" in value)):
            continue
        def side(key, model="finetuned", value=value):
            m = Metric.parse(value.get(key))
            if m is not None:
                return getattr(m, model)
            return value.get(key) if model == "finetuned" else None

        clean, pert, drop = side("clean"), side("perturbed"), side("drop")
        if drop is None and _num(clean) and _num(pert):
            drop = clean - pert
        example = value.get("example") if isinstance(value.get("example"), dict) else {}
        n = value.get("n")
        if n is None and (m := Metric.parse(value.get("perturbed"))) is not None:
            n = m.n
        rows.append({"name": name, "clean": clean, "perturbed": pert, "drop": drop, "base_drop": side("drop", "base"),
                     "n": n, "example": example.get("perturbed"), "clean_example": example.get("clean")})
    return rows, facts


def build_context(res: RunResults) -> dict:
    """Everything the template shows, computed from the result files only."""
    best_step = res.summary.best_step if res.summary else None
    if best_step is None and res.curves and res.curves.evals:
        best_step = res.curves.evals[-1].best_step
    probes = res.probes
    ctx = {
        "title": (res.recipe or {}).get("name") or res.run_dir.name,
        "run_dir": str(res.run_dir),
        "problems": res.problems,
        "recipe": res.recipe,
        "recipe_text": _recipe_text(res),
        "summary": res.summary,
        "best_step": best_step,
        "provenance": res.provenance or (res.summary and res.summary.provenance) or (res.eval and res.eval.provenance),
        "audit": res.audit,
        "findings": sorted(res.findings or [], key=lambda f: SEVERITY_ORDER.get(f.severity, 3)),
        "audit_stats": _scalars(res.audit.get("stats")) if res.audit else [],
        "curves": res.curves,
        "training_svg": Markup(plots.training_curves(res.curves, best_step) or ""),
        "checkpoint_svg": Markup(plots.checkpoint_metrics(res.curves, best_step) or ""),
        "checkpoints": [{k: getattr(r, k) for k in CHECKPOINT_KEYS} | {"best": r.step == best_step}
                        for r in (res.curves.evals if res.curves else [])],
        "guard_events": res.curves.guard_events if res.curves else [],
        "eval": res.eval,
        "eval_settings": _scalars(res.eval.settings.to_dict()) if res.eval else [],
        "verdicts": sorted(res.verdicts or [], key=lambda v: STATUS_ORDER.get(v.status, 3)),
        "samples": res.samples or [],
    }
    for name in ("task", "forgetting", "diversity"):
        rows, facts = compare_rows(probes.get(name))
        ctx[name] = {"present": name in probes, "rows": rows, "facts": facts,
                     "svg": Markup(plots.before_after(rows, name) or "") if name != "diversity" else ""}
    mem = probes.get("memorization") if isinstance(probes.get("memorization"), dict) else {}
    mem_rows, mem_facts = compare_rows({k: v for k, v in mem.items() if k != "worst"})
    ctx["memorization"] = {"present": "memorization" in probes, "rows": mem_rows, "facts": mem_facts,
                           "worst": [w for w in mem.get("worst") or [] if isinstance(w, dict)]}
    rob_rows, rob_facts = robustness_rows(probes.get("robustness") if isinstance(probes.get("robustness"), dict) else {})
    ctx["robustness"] = {"present": "robustness" in probes, "rows": rob_rows, "facts": rob_facts,
                         "svg": Markup(plots.robustness(rob_rows) or "")}
    ctx["forgetting"]["examples"] = [e for e in (probes.get("forgetting") or {}).get("examples") or []
                                     if isinstance(e, dict)][:8] if isinstance(probes.get("forgetting"), dict) else []
    skipped = res.eval.settings.skipped if res.eval else None
    ctx["skipped"] = skipped if isinstance(skipped, dict) else {}
    ctx["guard_summary"] = _scalars(res.summary.guards) if res.summary else []
    ctx["data"] = _data_rows(res)
    ctx["overview"] = _overview(res, best_step)
    from ..update.report import update_section  # an update run: the version against its parent

    ctx["update"] = update_section(res.run_dir)
    return ctx


def _recipe_text(res: RunResults) -> str | None:
    path = RunDir(res.run_dir).recipe
    if path.exists():
        try:
            return path.read_text(encoding="utf-8")
        except OSError:
            return None
    return None


def _scalars(d, prefix: str = "") -> list[dict]:
    """Flatten a stats mapping to (name, value) rows, keeping scalars and short lists."""
    out = []
    for k, v in (d or {}).items() if isinstance(d, dict) else []:
        if isinstance(v, dict):
            out += _scalars(v, f"{prefix}{k}.")
        elif not isinstance(v, list) or len(v) <= 6:
            out.append({"name": f"{prefix}{k}", "value": v})
    return out


def _data_rows(res: RunResults) -> list[dict]:
    data = (res.recipe or {}).get("data") or {}
    rows = [{"name": k, "value": data.get(k)} for k in ("train", "validation", "test", "max_length") if data.get(k)]
    if res.summary is None:
        return rows
    info = res.summary.data_info
    if info.validation_source:
        rows.append({"name": "validation from", "value": info.validation_source})
    for split, st in (("train", info.train), ("validation", info.validation)):
        if st is not None:
            rows.append({"name": f"{split} examples", "value": st.examples})
            rows.append({"name": f"{split} tokens (trainable)", "value": f"{fmt(st.tokens)} ({fmt(st.trainable_tokens)})"})
            if st.truncated_examples:
                rows.append({"name": f"{split} truncated", "value": f"{st.truncated_examples} examples, "
                                                                       f"{fmt(st.truncated_tokens)} tokens cut"})
    return rows


def _overview(res: RunResults, best_step) -> list[dict]:
    r = res.recipe or {}
    s = res.summary
    rows = [{"name": "model", "value": (r.get("model") or {}).get("name")},
            {"name": "method", "value": _method_text(r.get("method") or {})}]
    t = r.get("train") or {}
    if t:
        rows.append({"name": "training", "value": f"lr {fmt(t.get('lr'))}, up to {fmt(t.get('epochs'))} epochs, "
                                                  f"batch {t.get('batch_size')}×{t.get('grad_accum', 1)}, seed {t.get('seed')}"})
    if s is not None:
        stop = s.stopped or ""
        rows.append({"name": "stopped", "value": f"{stop}: {s.stop_message}" if s.stop_message else stop})
        rows.append({"name": "steps", "value": f"{fmt(s.steps)} ({fmt(s.epochs)} epochs), "
                                               f"{fmt(s.train_tokens)} tokens in {fmt(s.wall_seconds)} s"})
        if _num(s.trainable_params) and s.trainable_params:
            share = s.trainable_params / max(s.total_params or 1, 1)
            rows.append({"name": "parameters", "value": f"{fmt(s.trainable_params)} trainable of "
                                                        f"{fmt(s.total_params)} ({share:.2%})"})
        m = s.best or EvalRecord()
        rows.append({"name": "chosen checkpoint", "value": f"step {best_step}: validation loss {fmt(m.eval_loss)}, "
                     f"perplexity {fmt(m.eval_ppl)}, token accuracy {fmt(m.eval_token_acc)} "
                     f"({s.selection or ''})" if best_step is not None else "none"})
    return [row for row in rows if row["value"]]


def _method_text(m: dict) -> str:
    if not m:
        return ""
    extra = ", ".join(f"{k} {fmt(m[k])}" for k in ("r", "alpha", "dropout") if k in m)
    return f"{m.get('name', '')}{f' ({extra})' if extra else ''}"


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("smalltune.report", "templates"),
                      autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    return env


def render_html(res: RunResults) -> str:
    return _environment().get_template("report.html.j2").render(**build_context(res))


def write_report(run_dir: str | Path) -> Path:
    """Render ``report.html`` and ``report.md`` into ``run_dir`` from its result files; returns the HTML path."""
    from .markdown import render_markdown

    res = load_results(run_dir)
    run = RunDir(res.run_dir)
    atomic_write_text(run.report, render_html(res))
    atomic_write_text(run.report_md, render_markdown(res))
    return run.report
