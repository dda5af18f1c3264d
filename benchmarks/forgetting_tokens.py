"""Where does an update's rise in reference perplexity sit: on number tokens, or on everything?

Issue 15: the update that changes prices and hours raises general-text perplexity by 0.5-5 points per 10 steps
(benchmarks/README.md, "Three levers against the second update's budget"). If the rise sat on the reference
text's number tokens, it would be the changed numbers leaking into numbers in general; if it is spread over all
tokens, the update moves the model broadly. This scores the first windows of a continual-benchmark run's
measurement paragraphs with the base model, version 2 and version 3 of one seed's default `update` arm and splits
the rise by whether the predicted token holds a digit.

    .venv/bin/python benchmarks/forgetting_tokens.py --seed 1      # needs that seed's continual_update runs
"""

from __future__ import annotations

import argparse
import json
import math

import _evidence as E

WINDOWS = 16  # 256-token windows: about the forgetting guard's 2,048 tokens doubled


def losses(model, items) -> "torch.Tensor":
    """Every window's next-token losses, one window at a time, concatenated (``train.loss.token_losses``)."""
    import torch

    from smalltune.train.loss import token_losses

    model.eval()
    with torch.no_grad():
        return torch.cat([token_losses(model(input_ids=ids).logits, ids)[0]
                          for ids in (torch.tensor([item.input_ids]) for item in items)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", type=int, default=2, help="the continual benchmark's data version")
    args = ap.parse_args()
    import torch

    from smalltune.data.tokenize import tokenize_plain
    from smalltune.models import load_from_recipe
    from smalltune.train import load_trained
    from smalltune.train.splits import measurement_paragraphs

    work = E.WORK / "continual_update" / f"seed{args.seed}-data{args.data}"
    runs = {"version 2": work / "v1-v2", "version 3": work / "v1-v3"}
    model, tok, recipe = load_trained(runs["version 3"])
    items = tokenize_plain(tok, measurement_paragraphs(runs["version 3"], recipe, 64), 256)[:WINDOWS]
    scored = {"version 3": losses(model, items)}
    del model
    scored["version 2"] = losses(load_trained(runs["version 2"])[0], items)
    scored["base"] = losses(load_from_recipe(recipe)[0], items)
    targets = torch.cat([torch.tensor(item.input_ids[1:]) for item in items]).tolist()
    digit = torch.tensor([any(c.isdigit() for c in tok.decode([t])) for t in targets])
    out = {"machine": E.machine(), "seed": args.seed, "windows": len(items), "tokens": len(targets), "rows": []}
    for name in ("version 2", "version 3"):
        rise = scored[name] - scored["base"]
        for label, mask in (("digit tokens", digit), ("other tokens", ~digit), ("all", torch.ones_like(digit))):
            out["rows"].append({"model": name, "tokens": label, "n": int(mask.sum()),
                                "ppl_rise_vs_base": round(math.exp(rise[mask].mean().item()) - 1, 4),
                                "share_of_loss_rise": round((rise[mask].sum() / rise.sum()).item(), 3)})
    E.atomic_text(E.RESULTS / f"forgetting_tokens-seed{args.seed}.json", json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["rows"], indent=2))


if __name__ == "__main__":
    main()
