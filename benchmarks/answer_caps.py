"""How long must a held-out answer be? Key-fact recall of the demo's test answers cut at different lengths.

The task and robustness probes generate each answer up to a cap; every token past the point where the model has
said what it knows is decoding time for nothing, and the base model rarely ends its answers (issue 19 item 6). This
generates the greedy answers of the base model and of a fine-tuned run to the demo's 72 test questions and their
rephrasings at 96 new tokens, then cuts them (a greedy answer capped at k tokens is the first k tokens of a longer
one) at each rule and reports key-fact recall, how many answers' recall changed, and the tokens decoded.

    .venv/bin/python benchmarks/answer_caps.py --run RUN_DIR     # results/answer_caps.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import _evidence as E
from smalltune.recipe import EvalSection

FULL = EvalSection().max_new_tokens  # the full evaluation's answer cap (96)
RULES = {  # name -> cap from the reference answer's token count
    "reference + 8": lambda n: n + 8, "reference + 16": lambda n: n + 16, "reference + 32": lambda n: n + 32,
    "2 x reference": lambda n: 2 * n, "2 x reference + 8": lambda n: 2 * n + 8, "48": lambda n: 48,
    "64": lambda n: 64,
}


def questions(tok, system: str | None) -> list[tuple]:
    """(example, rendered prompt) for each test question as written and each of its rephrasings."""
    from smalltune.data import load_examples
    from smalltune.data.tokenize import render

    out = []
    for ex in load_examples(E.DEMO / "test.jsonl"):
        conv = ex.prompt(system)
        for q in [conv[-1]["content"], *(ex.meta.get("rephrasings") or [])]:
            out.append((ex, render(tok, [*conv[:-1], {"role": "user", "content": q}], add_generation_prompt=True)))
    return out


def study(model, tok, asked: list[tuple]) -> dict:
    from smalltune.evaluate import metrics as M
    from smalltune.generate import GenerationSettings, generate_text

    outs = generate_text(model, tok, [p for _, p in asked], GenerationSettings(max_new_tokens=FULL, batch_size=64))
    ids = [tok(o, add_special_tokens=False).input_ids for o in outs]
    refs = [len(tok(ex.target, add_special_tokens=False).input_ids) for ex, _ in asked]
    recall = lambda cap: [M.key_fact_recall(tok.decode(a[:c]), ex.meta.get("key_facts") or [])  # noqa: E731
                          for a, c, (ex, _) in zip(ids, cap, asked)]
    full = recall([FULL] * len(ids))
    res = {"answers": len(ids), "answer_tokens_mean": round(statistics.mean(map(len, ids)), 1),
           "answers_at_cap": sum(len(a) >= FULL for a in ids), "reference_tokens_mean": round(statistics.mean(refs), 1),
           "key_fact_recall_at_96": round(statistics.mean(full), 4), "rules": {}}
    for name, rule in RULES.items():
        caps = [min(rule(n), FULL) for n in refs]
        got = recall(caps)
        res["rules"][name] = {"key_fact_recall": round(statistics.mean(got), 4),
                              "answers_changed": sum(a != b for a, b in zip(got, full)),
                              "tokens_decoded_share": round(sum(min(len(a), c) for a, c in zip(ids, caps))
                                                            / max(sum(map(len, ids)), 1), 3)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a fine-tuned run directory on the demo data (its model or adapter)")
    ap.add_argument("--output", default=str(E.RESULTS / "answer_caps.json"))
    args = ap.parse_args()
    from smalltune.models import load_from_recipe
    from smalltune.train import load_trained

    tuned, tok, recipe = load_trained(args.run)
    asked = questions(tok, recipe.data.system_prompt)
    out = {"machine": E.machine(), "run": args.run, "finetuned": study(tuned, tok, asked)}
    del tuned
    base, _ = load_from_recipe(recipe)
    out["base"] = study(base, tok, asked)
    E.atomic_text(Path(args.output), json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
