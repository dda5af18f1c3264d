"""The training loop, top to bottom in one file.

We drive training with an ``accelerate`` loop rather than ``transformers.Trainer``: guards,
checkpoint selection and resumption stay visible here in ~200 lines, and ``accelerate launch``
still takes the same code to several GPUs (DDP / FSDP / DeepSpeed).

Order of events per optimizer step: forward -> loss on assistant tokens -> backward -> clip ->
step -> log. Every ``eval_every`` steps: validation metrics -> guards -> best checkpoint ->
periodic checkpoint (for --resume).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Sampler

from .. import console
from ..data.batching import batch_indices, collate
from ..models import load_from_recipe
from ..provenance import provenance
from ..recipe import Recipe
from ..rundir import atomic_write_json, open_run_dir, publish_dir
from .checkpoint import latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from .data import prepare_data
from .guards import UNSAFE_STOPS, GuardContext, build_guards, build_selector, drop_snapshots, keep_best, restore_best
from .loss import causal_lm_loss, dataset_metrics
from .methods import METHODS, count_parameters
from .regularize import build_regularizers, build_step


@dataclass
class TrainResult:
    """What ``train`` returns and writes as ``train_summary.json``."""

    run_dir: str
    stopped: str  # "completed", "max_steps", or the guard that stopped the run
    stop_message: str
    steps: int
    epochs: float
    best_step: int | None
    best_metrics: dict | None
    selection: str
    train_tokens: int
    wall_seconds: float
    trainable_params: int
    total_params: int
    data: dict = field(default_factory=dict)
    events: list = field(default_factory=list)
    guards: dict = field(default_factory=dict)  # each guard's end-of-run numbers (gap, forgetting, ...)
    artifact_written: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


class EpochBatches(Sampler):
    """Length-grouped shuffled batches, reshuffled per epoch (seed + epoch) so resume is exact."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group_by_length: bool):
        self.lengths, self.batch_size, self.seed, self.group = lengths, batch_size, seed, group_by_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(batch_indices(self.lengths, self.batch_size, self.seed + self.epoch, self.group))

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


def resolve_precision(precision: str) -> str:
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return {"fp32": "no"}.get(precision, precision)


def build_optimizer(model, t) -> torch.optim.Optimizer:
    # No weight decay on biases and norm weights (1-D tensors), as is standard for AdamW.
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=t.lr)


def build_scheduler(optimizer, t, total_steps: int):
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup"}.get(t.scheduler, t.scheduler)
    return get_scheduler(name, optimizer, num_warmup_steps=round(t.warmup_ratio * total_steps),
                         num_training_steps=total_steps)


def train(recipe: Recipe, resume: bool = False, progress: bool = True) -> TrainResult:
    """Fine-tune ``recipe.model`` on ``recipe.data`` with ``recipe.method``; returns and writes the summary.

    >>> result = train(load_recipe("examples/dental/recipe.yaml", ["train.max_steps=20"]))
    >>> result.best_metrics["eval_ppl"]
    """
    t = recipe.train
    run = open_run_dir(recipe, resume)
    set_seed(t.seed)
    accelerator = Accelerator(mixed_precision=resolve_precision(t.precision), gradient_accumulation_steps=t.grad_accum)
    main = accelerator.is_main_process

    # --- model, data, method ----------------------------------------------------------------
    model, tok = load_from_recipe(recipe)
    data = prepare_data(recipe, tok, model, run.path, accelerator.device)  # target transforms use the base model
    method = METHODS.get(recipe.method.name, "method.name")()
    model = method.apply(model, recipe.method, recipe)
    trainable, total = count_parameters(model)
    if main:
        console.train_header(recipe, data, trainable, total, run.path)

    # --- optimisation plan --------------------------------------------------------------------
    sampler = EpochBatches([len(x) for x in data.train], t.batch_size, t.seed, t.group_by_length)
    # Its own generator: creating an iterator must not draw from the global RNG (dropout's), or a
    # resumed run would see different dropout masks than an uninterrupted one.
    loader = DataLoader(data.train, batch_sampler=sampler, collate_fn=lambda b: collate(b, tok.pad_token_id),
                        generator=torch.Generator().manual_seed(t.seed))
    steps_per_epoch = max(1, math.ceil(len(sampler) / t.grad_accum))
    total_steps = math.ceil(t.epochs * steps_per_epoch)
    if t.max_steps:
        total_steps = min(total_steps, t.max_steps)
    eval_every = recipe.eval.every_steps or max(1, steps_per_epoch // recipe.eval.per_epoch)
    optimizer = build_optimizer(model, t)
    scheduler = build_scheduler(optimizer, t, total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    # --- regularisation: set up on the starting weights (before any resume), so anchors are the base --
    regularizers = build_regularizers(recipe)
    regularizers.setup(accelerator.unwrap_model(model), tok, recipe, accelerator.device)
    step = build_step(recipe, accelerator, model.parameters())  # plain backward, or SAM's two passes

    def objective(batch):
        """(task loss, total loss to minimise = task loss + regularisation penalties) of one micro-batch."""
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        task = causal_lm_loss(logits, batch["labels"])
        return task, task + regularizers.penalty(model)

    guards, selector = build_guards(recipe), build_selector(recipe)
    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "train_tokens": 0, "elapsed": 0.0, "events": []}

    # --- resume -------------------------------------------------------------------------------
    if resume and (ckpt := latest_checkpoint(run)) is not None:
        saved = load_checkpoint(ckpt, method, accelerator.unwrap_model(model), optimizer, scheduler)
        state.update(saved["loop"])
        selector.load_state_dict(saved["selector"])
        for g in guards:
            g.load_state_dict(saved["guards"].get(g.name, {}))
        run.truncate_metrics_after(state["step"])
        run.log({"type": "event", "event": "resume", "step": state["step"], "checkpoint": ckpt.name})
        if main:
            console.info(f"resuming from {ckpt} (step {state['step']} of {total_steps})")
    elif not resume:
        run.log({"type": "event", "event": "start", "step": 0, "total_steps": total_steps, "eval_every": eval_every,
                 "steps_per_epoch": steps_per_epoch, **data.counts(), "regularizers": regularizers.names,
                 **regularizers.info})

    def autocast():
        return accelerator.autocast()

    guard_ctx = GuardContext(model, tok, accelerator.device, recipe.eval.batch_size, autocast, accelerator.unwrap_model)
    guards.setup(guard_ctx)  # e.g. the forgetting budget scores the base model once, here

    def log_guard_event(event, stop_reason: str | None) -> str | None:
        """Record a guard event; the first 'stop' becomes the run's stop reason."""
        state["events"].append(event.to_dict())
        run.log({"type": "event", "event": "guard", **event.to_dict()})
        if event.action == "stop" and stop_reason is None:
            stop_reason, state["stop_message"] = event.guard, event.message
        return stop_reason

    def evaluate_and_checkpoint(stop_reason: str | None) -> str | None:
        """Validation metrics, best checkpoint, guards, periodic checkpoint; returns a stop reason."""
        step = state["step"]
        record = dataset_metrics(model, data.validation, recipe.eval.batch_size, accelerator.device,
                                 tok.pad_token_id, autocast)
        record.update(step=step, epoch=round(step / steps_per_epoch, 3), train_loss=window_loss())
        for event in guards.evaluate(record, step, guard_ctx):  # also adds each guard's signal to the record
            stop_reason = log_guard_event(event, stop_reason)
        unwrapped = accelerator.unwrap_model(model)
        keep_best(run, method, unwrapped, selector, record, step, write=main)  # selection sees the guards' flags
        run.log({"type": "eval", **record, "best_step": selector.best_step})
        if main:
            save_checkpoint(run, run.checkpoint(step), method, unwrapped,
                            {"loop": {**state, "elapsed": elapsed()}, "selector": selector.state_dict(),
                             "guards": {g.name: g.state_dict() for g in guards}},
                            optimizer, scheduler)
            prune_checkpoints(run, t.keep_checkpoints)
            bar.set_postfix(eval_loss=f"{record['eval_loss']:.3f}", best=selector.best_step)
        return stop_reason

    # --- the loop -----------------------------------------------------------------------------
    started = time.perf_counter() - state["elapsed"]
    elapsed = lambda: time.perf_counter() - started  # noqa: E731
    recent: list[float] = []
    window_loss = lambda: sum(recent) / len(recent) if recent else None  # noqa: E731
    stop_reason = None
    bar = console.progress(total_steps, state["step"], disable=not (progress and main))
    model.train()
    while state["step"] < total_steps and stop_reason is None:
        sampler.set_epoch(state["epoch"])
        method.on_epoch_start(accelerator.unwrap_model(model), state["epoch"], t.seed)
        batches = accelerator.skip_first_batches(loader, state["batches_in_epoch"]) if state["batches_in_epoch"] else loader
        for batch in batches:
            with accelerator.accumulate(model):
                loss, _ = step(lambda: objective(batch))  # forward and backward
                grad_norm = None
                if accelerator.sync_gradients and (t.max_grad_norm or guards.wants_grad_norm):
                    grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm or math.inf))
                if (event := guards.check_step(loss.item(), grad_norm, state["step"] + 1)) is not None:
                    stop_reason = log_guard_event(event, stop_reason)
                    break  # before optimizer.step(): no non-finite update reaches the weights
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            state["batches_in_epoch"] += 1
            state["train_tokens"] += int(batch["attention_mask"].sum())
            recent.append(loss.item())
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            run.log({"type": "train", "step": state["step"], "epoch": round(state["step"] / steps_per_epoch, 3),
                     "loss": loss.item(), "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                     "tokens": state["train_tokens"], "elapsed": round(elapsed(), 2), **regularizers.metrics()})
            bar.update(1)
            bar.set_postfix_str(f"loss={loss.item():.3f}", refresh=False)
            if state["step"] % eval_every == 0 or state["step"] == total_steps:
                stop_reason = evaluate_and_checkpoint(stop_reason)
                recent.clear()
            if stop_reason or state["step"] >= total_steps:
                break
        else:
            state["epoch"] += 1
            state["batches_in_epoch"] = 0
    bar.close()
    regularizers.close()

    # --- finish: restore the best checkpoint, save the artifact, summarise ----------------------
    unwrapped = accelerator.unwrap_model(model)
    # Without a chosen checkpoint, weights that went non-finite or past the forgetting budget are not published.
    publish = restore_best(run, method, unwrapped, selector) or stop_reason not in UNSAFE_STOPS
    if main and publish:
        tmp = run.path / f".{method.artifact}.tmp"
        method.save(unwrapped, tmp)
        tok.save_pretrained(tmp)  # the artifact folder then stands alone (chat template included)
        publish_dir(tmp, run.path / method.artifact)
    accelerator.wait_for_everyone()  # every process has restored the chosen weights before they go
    if main:
        drop_snapshots(run)
    if not publish:
        state["stop_message"] = state.get("stop_message", "") + f"; no checkpoint passed the guards, so no {method.artifact}/ was written"
    stopped = stop_reason or ("max_steps" if state["step"] < math.ceil(t.epochs * steps_per_epoch) else "completed")
    result = TrainResult(
        run_dir=str(run.path), stopped=stopped, stop_message=state.get("stop_message", ""),
        steps=state["step"], epochs=round(state["step"] / steps_per_epoch, 3),
        best_step=selector.best_step, best_metrics=selector.best_record, selection=selector.reason(),
        train_tokens=state["train_tokens"], wall_seconds=round(elapsed(), 2),
        trainable_params=trainable, total_params=total,
        data={"validation_source": data.validation_source, "train": data.train_stats.to_dict(),
              "validation": data.validation_stats.to_dict(), "transforms": data.transforms,
              "regularizers": {"names": regularizers.names, **regularizers.info}},
        events=state["events"], guards=guards.summary(), artifact_written=publish,
    )
    if main:
        run.log({"type": "event", "event": "end", "step": state["step"], "stopped": stopped})
        atomic_write_json(run.train_summary, {**result.to_dict(), "provenance": provenance(recipe, **data.counts())})
        console.train_footer(result)
    return result
