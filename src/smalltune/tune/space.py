"""What a tuning search varies, and why those knobs.

The evidence (benchmarks/README.md, experiment 1 and "learning vs forgetting"): the learning rate
matters more than the choice among LoRA variants (and the best LoRA rate is about 10x the full
fine-tuning rate, "LoRA Learns Less and Forgets Less", arXiv 2405.09673); replay cut LoRA's
forgetting from +12.4% to +2.3% at the same validation loss; HFT and full fine-tuning at 1e-4 lay on
the learning/forgetting Pareto front. So a trial draws: the method (among ``tune.methods`` that fit
the device), its learning rate on a log range around the method's own prior (``Method.rate``), the
LoRA rank, and the replay share. Training length is left to early stopping within ``train.epochs``.
"""

from __future__ import annotations

LORA_RANKS = (8, 16, 32)  # alpha = 2r keeps the update scale fixed across ranks
RANKED = ("lora", "dora")  # the methods whose rank a trial draws


def methods_that_fit(recipe) -> list[str]:
    """``tune.methods`` filtered by the memory planner for this device (unknown shapes are kept)."""
    from ..plan.hardware import detect_device
    from ..plan.memory import estimate, model_shape
    from ..recipe import recipe_from_dict

    wanted = list(recipe.tune.methods)
    try:
        shape, device = model_shape(recipe.model.name), detect_device()
    except Exception:  # a model the planner cannot size without loading: let every method compete
        return wanted
    fits = []
    for name in wanted:
        cfg = recipe_from_dict({**recipe.to_dict(), "method": {**recipe.to_dict()["method"], "name": name}}).method
        need = estimate(shape, name, cfg, recipe.train.batch_size, recipe.data.max_length, device=device.kind)
        if need.total <= device.usable:
            fits.append(name)
    return fits or wanted[:1]


def lr_range(method: str, tune) -> tuple[float, float]:
    """The learning rates a trial of ``method`` may draw: ``tune.lr_factor`` either side of the method's prior."""
    from ..train.methods import METHODS

    prior = METHODS.get(method, "tune.methods")().rate.lr
    return prior / tune.lr_factor, prior * tune.lr_factor


def suggest(trial, recipe, methods: list[str]) -> list[str]:
    """Recipe overrides for one trial (also stored on the trial, so any trial can be rebuilt)."""
    t = recipe.tune
    method = trial.suggest_categorical("method", methods)
    lr = trial.suggest_float(f"lr_{method}", *lr_range(method, t), log=True)
    out = [f"method.name={method}", f"train.lr={lr:.3g}"]
    if method in RANKED:
        r = trial.suggest_categorical("lora_r", list(LORA_RANKS))
        out += [f"method.r={r}", f"method.alpha={2 * r}"]
    replay = trial.suggest_float("replay_ratio", 0.0, t.replay_max) if t.replay_max > 0 else 0.0
    out.append(f"regularize.replay_ratio={round(replay, 3)}")
    trial.set_user_attr("overrides", out)
    return out


def recipe_params(recipe, methods: list[str]) -> dict | None:
    """The recipe's own settings as trial parameters (for ``study.enqueue_trial``), or None where they lie
    outside the search space (a method not searched, a rate beyond ``lr_factor`` of the prior, a rank or alpha
    the search does not draw, more replay than ``replay_max``)."""
    t, method, lr = recipe.tune, recipe.method.name, recipe.train.lr
    if method not in methods:
        return None
    low, high = lr_range(method, t)
    if not low <= lr <= high:
        return None
    params = {"method": method, f"lr_{method}": float(lr)}
    if method in RANKED:
        if recipe.method.r not in LORA_RANKS or recipe.method.alpha != 2 * recipe.method.r:
            return None
        params["lora_r"] = recipe.method.r
    if t.replay_max > 0:
        if recipe.regularize.replay_ratio > t.replay_max:
            return None
        params["replay_ratio"] = float(recipe.regularize.replay_ratio)
    return params
