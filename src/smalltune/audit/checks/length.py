"""Length: token-length distribution, examples over max_length, examples truncation empties.

With a model, lengths are exact: the chat template plus the model's tokenizer, exactly as training
tokenises (``data.tokenize``). Without one they are approximated at ~4 characters per token
(plus a few tokens of template per turn), which is enough to see the shape of the distribution.
"""

from __future__ import annotations

from ..context import MAX_EXAMPLES
from ..report import Finding
from ..text import approx_tokens
from . import CHECKS

TURN_OVERHEAD = 4  # template tokens per turn in common chat formats (<|im_start|>role\n ... <|im_end|>\n)


def distribution(values: list[int | float]) -> dict:
    """min / mean / percentiles / max of a list of numbers (nearest-rank percentiles)."""
    if not values:
        return {"n": 0}
    s = sorted(values)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
    return {"n": len(s), "min": s[0], "mean": sum(s) / len(s), "p50": pick(0.5), "p90": pick(0.9),
            "p99": pick(0.99), "max": s[-1]}


def _approx(ex, system_prompt):
    """(total tokens, prompt tokens before the last answer) without a tokenizer."""
    msgs = ex.with_system(system_prompt)
    sizes = [approx_tokens(m["content"]) + TURN_OVERHEAD for m in msgs]
    return sum(sizes), sum(sizes[:-1]) + TURN_OVERHEAD


def _lengths(ctx, name):
    """Per example: (total tokens, trainable tokens left after truncation)."""
    if ctx.tokenizer is not None:
        return [(len(t) + t.truncated_tokens, t.n_trainable) for t in ctx.tokenized[name]]
    out = []
    for ex in ctx.splits[name].examples:
        total, prompt = _approx(ex, ctx.system_prompt)
        out.append((total, max(0, min(total, ctx.max_length) - prompt)))
    return out


@CHECKS.register("length")
def check(ctx) -> list[Finding]:
    method = "tokenizer" if ctx.tokenizer is not None else "approx (4 characters per token)"
    stats = {"method": method, "max_length": ctx.max_length}
    over, emptied = [], []
    for name in ctx.splits:
        lengths = _lengths(ctx, name)
        stats[name] = distribution([n for n, _ in lengths])
        for i, (n, left) in enumerate(lengths):
            if n > ctx.max_length:
                over.append(ctx.where(name, i, tokens=n))
            if left == 0:
                emptied.append(ctx.where(name, i, tokens=n))
    ctx.stats["length"] = stats
    findings = []
    approx = "" if ctx.tokenizer is not None else " (approximate lengths: pass --model for exact counts)"
    if emptied:
        findings.append(Finding(
            "length", "error", "no trainable tokens left after truncation", len(emptied),
            f"the prompt alone fills max_length={ctx.max_length}, so these examples are dropped from training; "
            f"shorten the prompts or raise data.max_length{approx}", emptied[:MAX_EXAMPLES]))
    if over:
        over.sort(key=lambda w: -w["tokens"])
        findings.append(Finding(
            "length", "warning", f"longer than max_length={ctx.max_length}", len(over),
            "the end of these examples (part of the answer) is cut in training; raise data.max_length "
            f"(memory grows with it) or split the long examples{approx}", over[:MAX_EXAMPLES]))
    return findings
