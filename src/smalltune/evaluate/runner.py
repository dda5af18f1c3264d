"""``evaluate``: load the run once, run the probes base vs fine-tuned, judge, write ``eval.json``."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import SmalltuneError
from ..provenance import provenance
from ..rundir import RunDir, atomic_write_json
from .context import QUICK, Caps, EvalContext
from .results import EvalResult, EvalSettings, Sample
from .verdicts import read_training, verdicts


def caps_from_recipe(recipe, quick: bool) -> Caps:
    if quick:
        return QUICK
    e = recipe.eval  # the recipe's eval section is the one source of these defaults
    return Caps(test=e.test_samples, memorization=e.memorization_samples, reference_paragraphs=e.reference_paragraphs,
                probe_questions=e.probe_questions, max_new_tokens=e.max_new_tokens)


def _heldout(recipe, test, run_path):
    """(examples, source): the test file, else the validation file, else the run's recorded validation split."""
    from ..data import load_examples
    from ..train.splits import recorded_splits

    d = recipe.data
    if test:
        return load_examples(test), str(test)
    if d.validation:
        return load_examples(d.validation), f"{d.validation} (validation file: no test set given)"
    return recorded_splits(run_path, recipe).validation, "the run's validation split (no test set given)"


def _reference(reference, recipe, caps: Caps, run_path):
    from ..data.reference import load_reference_file
    from ..train.splits import measurement_paragraphs

    if reference:
        return load_reference_file(reference), str(reference)
    try:
        return (measurement_paragraphs(run_path, recipe, max(caps.reference_paragraphs, 1)),
                "Wikipedia paragraphs (gensim test data; the run's measurement paragraphs, never trained on)")
    except SmalltuneError as e:  # the reference packages are optional: skip the probe, say why
        return [], str(e)


def evaluate(run_dir, test=None, reference=None, quick: bool = False, probes=None, progress: bool = True,
             precision: str | None = None) -> EvalResult:
    """Evaluate a trained run base vs fine-tuned; writes ``<run_dir>/eval.json`` and returns the result.
    ``precision`` overrides the recipe's ``eval.precision`` for this evaluation.

    >>> result = evaluate("runs/dental-demo", quick=True)
    >>> result.probes["task"]["key_fact_recall"]["delta"]
    """
    from ..train import load_trained
    from .probes import PROBES

    run = RunDir(Path(run_dir))
    if not run.path.is_dir() or not run.recipe.exists():
        raise SmalltuneError(f"{run.path}: not a run directory (no recipe.yaml); pass the output_dir of `smalltune train`")
    wanted = list(probes) if probes else None
    for name in wanted or []:
        PROBES.get(name, "--probes")  # unknown name: did-you-mean error before any model loads
    started = time.perf_counter()
    model, tok, recipe = load_trained(run.path, [f"eval.precision={precision}"] if precision else [])
    seed = recipe.train.seed
    caps = caps_from_recipe(recipe, quick)
    heldout, source = _heldout(recipe, test or recipe.data.test, run.path)
    texts, ref_source = _reference(reference, recipe, caps, run.path)
    ctx = EvalContext(model=model, tokenizer=tok, recipe=recipe, run_dir=run.path, caps=caps, seed=seed,
                      test=heldout, test_source=source, reference_texts=texts, reference_source=ref_source,
                      progress=progress, batch_size=recipe.eval.batch_size)
    chosen, skipped = {}, {}
    for name, probe in PROBES.items():
        if wanted is not None and name not in wanted:
            continue
        if reason := probe.applies(ctx):
            skipped[name] = reason
        else:
            chosen[name] = probe
    ctx.prefetch([request for probe in chosen.values() for request in probe.prompts(ctx)])
    results = {}
    for name, probe in chosen.items():
        with ctx.timed(name):
            results[name] = probe.run(ctx)
    training = read_training(run)
    settings = EvalSettings(
        generation={**ctx.settings().to_dict(), "greedy": True, "precision": ctx.precision,
                    "precision_reason": ctx.precision_reason,
                    "base_answers_reused": ctx.base_answers_reused,
                    "base_answers_generated": ctx.base_answers_generated,
                    "base_answers_kept": ctx.base_answers_kept},
        quick=quick, caps=dict(caps.__dict__), seed=seed, heldout=source,
        reference=ref_source, skipped=skipped, wall_seconds=round(time.perf_counter() - started, 1),
        phase_seconds=ctx.phase_seconds,
        ci="95% paired bootstrap CI of the delta (finetuned - base), items resampled, 1000 resamples",
    )
    result = EvalResult(
        run_dir=str(run.path),
        provenance=provenance(recipe, seed, heldout_examples=len(heldout), reference_paragraphs=len(texts)),
        settings=settings, probes=results, verdicts=verdicts(results, training),
        samples=[Sample.from_dict(s) for s in ctx.samples],
    )
    atomic_write_json(run.eval, result.to_dict())  # schema_version first, as every result file
    return result
