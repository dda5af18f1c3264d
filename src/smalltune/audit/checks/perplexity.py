"""Perplexity: how far each training answer is from what the base model would say.

Each example's assistant tokens are scored under the base model (batched, sorted by length so
batches carry little padding). Reported: per-example perplexity and its distribution, the
highest-perplexity examples with their worst tokens, and the share of response tokens whose
own perplexity exp(loss) exceeds a threshold (2.5, following "Selective Token Masking",
arXiv 2501.14315): that share is roughly how much the model will have to change to fit the data,
and the tokens above it are the ones STM masks.
"""

from __future__ import annotations

import math

from ..context import MAX_EXAMPLES
from ..report import Finding
from ..text import snippet
from . import CHECKS
from .length import distribution

# Scores per (model, its weight files, the exact token ids and labels), kept for the process: the demo's two
# arms, cv folds and tuning trials audit the same data with the same base model (36 s for the demo's 323 examples).
_SCORES: dict[tuple, tuple] = {}
TOKEN_PPL_THRESHOLD = 2.5  # per-token perplexity above which STM (arXiv 2501.14315) masks a token
BATCH_SIZE = 16
WORST_TOKENS = 5
OUTLIER_IQR = 3.0  # log-perplexity above Q3 + 3 IQR is an extreme outlier (Tukey's far fence)


def score(model, items, pad_id: int, batch_size: int = BATCH_SIZE, progress: bool = True) -> list[list[float]]:
    """Per item, the loss (nats) of each trainable token, in order; batched and length-sorted.

    >>> losses = score(model, tokenized_items, tok.pad_token_id)
    """
    import torch

    from ...console import progress as bar
    from ...data.batching import collate, eval_batches

    out: list[list[float]] = [[] for _ in items]
    was_training = model.training
    model.eval()
    with torch.no_grad(), bar(len(items), desc="perplexity", disable=not progress) as pbar:
        for idx in eval_batches(items, batch_size):
            batch = collate([items[i] for i in idx], pad_id)
            losses, mask = _batch_losses(model, batch)
            for row, i in enumerate(idx):
                out[i] = losses[row][mask[row]].tolist()
            pbar.update(len(idx))
    model.train(was_training)
    return out


def _batch_losses(model, batch):
    """Next-token losses at the positions whose next token is an assistant token (``train.loss``'s loss,
    with the output layer run only where some row of the batch is scored: ``scored_positions``)."""
    from ...data.tokenize import IGNORE
    from ...train.loss import batch_logits, keeps_logits, token_losses

    logits, labels = batch_logits(model, batch, keeps_logits(model))
    return token_losses(logits, labels), labels[:, 1:] != IGNORE


@CHECKS.register("perplexity")
def check(ctx) -> list[Finding]:
    if not ctx.model or "train" not in ctx.splits:
        return []
    tokenized = ctx.tokenized["train"]
    keep = [i for i, t in enumerate(tokenized) if t.n_trainable > 0]  # the rest the length check reports
    items = [tokenized[i] for i in keep]
    losses, tok = scored(ctx.model, items, ctx.progress)
    per_example, above, total = [], 0, 0
    for t, ls in zip(items, losses):
        per_example.append(math.exp(min(sum(ls) / max(len(ls), 1), 50.0)))
        above += sum(1 for x in ls if math.exp(x) > TOKEN_PPL_THRESHOLD)
        total += len(ls)
    share = above / max(total, 1)
    order = sorted(range(len(items)), key=lambda k: -per_example[k])
    top = [_describe(ctx, keep[k], items[k], losses[k], per_example[k], tok) for k in order[:MAX_EXAMPLES]]
    ctx.stats["perplexity"] = {
        "model": ctx.model, "examples": len(items), "response_tokens": total,
        "token_threshold": TOKEN_PPL_THRESHOLD, "tokens_above_threshold": above, "share_above_threshold": share,
        "example_ppl": distribution(per_example), "highest": top[:5],
    }
    findings = [Finding(
        "perplexity", "info", f"{share:.0%} of response tokens above perplexity {TOKEN_PPL_THRESHOLD:g}", above,
        f"median example perplexity {distribution(per_example).get('p50', 0):.2f} under {ctx.model}; the share of "
        "surprising tokens is how much the model must change: high values mean more forgetting risk, so consider "
        "masking those tokens (STM) or rewriting answers in the model's own words", top[:5])]
    outliers = _outliers(per_example)
    if outliers:
        findings.append(Finding(
            "perplexity", "warning", "answers far from the base model", len(outliers),
            "these answers are extreme outliers in perplexity (often wrong language, garbled text, or a label "
            "pasted as the answer); check them, rewrite or drop them",
            [_describe(ctx, keep[k], items[k], losses[k], per_example[k], tok)
             for k in sorted(outliers, key=lambda k: -per_example[k])[:MAX_EXAMPLES]]))
    return findings


def scored(model_name: str, items, progress: bool = True) -> tuple[list[list[float]], object]:
    """(:func:`score` of ``items`` under the base model ``model_name``, its tokenizer), once per process."""
    import hashlib

    from ...models import load_model, weights_stamp

    digest = hashlib.sha256(repr([(t.input_ids, t.labels) for t in items]).encode()).hexdigest()
    key = (model_name, weights_stamp(model_name), digest)
    if key not in _SCORES:
        model, tok = load_model(model_name)
        _SCORES[key] = (score(model, items, tok.pad_token_id, progress=progress), tok)
    return _SCORES[key]


def _outliers(ppl: list[float]) -> list[int]:
    if len(ppl) < 8:
        return []
    logs = sorted(math.log(p) for p in ppl)
    q1, q3 = logs[len(logs) // 4], logs[(3 * len(logs)) // 4]
    fence = q3 + OUTLIER_IQR * (q3 - q1)
    return [k for k, p in enumerate(ppl) if math.log(p) > fence]


def _describe(ctx, i, item, losses, ppl, tok) -> dict:
    """Pointer to one example with its perplexity and its worst tokens (text, per-token perplexity)."""
    from ...data.tokenize import IGNORE

    targets = [item.labels[p] for p in range(1, len(item.labels)) if item.labels[p] != IGNORE]
    worst = sorted(zip(losses, targets), key=lambda x: -x[0])[:WORST_TOKENS]
    return ctx.where("train", i, perplexity=round(ppl, 3), answer=snippet(item.example.target),
                     worst_tokens=[{"token": tok.decode([t]), "perplexity": round(math.exp(min(l, 50.0)), 2)}
                                   for l, t in worst])
