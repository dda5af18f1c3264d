"""The training loop, top to bottom in one file: ``fit`` trains prepared parts; ``train`` composes it all.

We drive training with an ``accelerate`` loop rather than ``transformers.Trainer``: guards,
checkpoint selection and resumption stay visible here, and ``accelerate launch`` still takes the
same code to several processes (DDP / FSDP / DeepSpeed).

Order of events per optimizer step: forward -> loss on assistant tokens (+ plugin penalties) ->
backward (through the plugins' step strategy, e.g. SAM) -> clip -> step guards (agreed across
ranks) -> optimizer step -> log. Every ``eval_every`` steps: validation metrics -> plugins measure
and check -> best checkpoint -> periodic checkpoint for --resume (every ``train.checkpoint_minutes``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field

from accelerate.utils import gather_object, set_seed

from .. import base_cache, console
from ..provenance import provenance
from ..rundir import RunDir, atomic_write_json, open_run_dir, publish_dir
from ..schema import TrainSummary
from .autocast import cast_once
from .checkpoint import (clean_interrupted, drop_checkpoints, latest_checkpoint, load_checkpoint, prune_checkpoints,
                         rng_state, save_checkpoint)
from .data import PreparedData, prepare_data
from .guards import UNSAFE_STOPS, Snapshots, keep_best, restore_best, snapshot_path
from .loss import batch_logits, causal_lm_loss, dataset_metrics, keeps_logits
from .plugins import STOPS, GuardEvent, PluginEnv
from .precision import choose_precision, keep_recorded
from .ranks import agreed, on_every_rank, over_ranks, set_epoch, shared_output_dir
from .regularize.sam import PlainStep
from .setup import (Base, Parts, base_view, build_optimizer, build_scheduler, items_key, make_accelerator,
                    resolve_precision, setup)
from .splits import write_record

WORSE_THAN_BASE_SLACK = 0.01  # nats of validation loss: a published checkpoint is at most this much worse than the base

__all__ = ["TrainResult", "LoopState", "fit", "train", "build_optimizer", "build_scheduler", "resolve_precision"]


TrainResult = TrainSummary  # what ``train`` returns: the typed record of train_summary.json (schema/summary.py)


@dataclass
class LoopState:
    """Where the loop is; saved in every checkpoint, so a resumed run continues exactly here."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    train_tokens: int = 0
    elapsed: float = 0.0
    events: list = field(default_factory=list)
    stop_reason: str | None = None
    stop_message: str = ""
    base_eval: dict | None = None  # validation metrics of the untrained model: nothing worse is published
    checkpointed_at: float = 0.0  # training seconds when the last --resume checkpoint was written
    protected: list = field(default_factory=list)  # its selector's candidates: their snapshots are kept
    keeps_weights: bool = True  # False once a plugin abandoned the run (plugins.STOPS)

    def note(self, event: GuardEvent) -> None:
        """Record a guard event; the first that ends the run (plugins.STOPS) becomes its stop reason."""
        self.events.append(event.to_dict())
        if event.action in STOPS and self.stop_reason is None:
            self.stop_reason, self.stop_message = event.guard, event.message
            self.keeps_weights = keeps_weights(self.events)


def keeps_weights(events: list[dict]) -> bool:
    """Whether a run with these guard events keeps weights: its first ending event (plugins.STOPS) decides, and a
    run that none ended keeps them."""
    return STOPS[next((e["action"] for e in events if e.get("action") in STOPS), "stop")]


def train(recipe, resume: bool = False, progress: bool = True, base: Base | None = None, splits=None,
          verbose: bool = True, plugins=(), init_from: str | None = None) -> TrainResult:
    """Fine-tune ``recipe.model`` on ``recipe.data`` with ``recipe.method``; returns and writes the summary.

    ``base`` reuses a loaded base model (a fresh copy per call); ``splits`` passes the examples in
    memory instead of reading ``recipe.data`` (folds, tuning); ``plugins`` are added to the recipe's;
    ``init_from`` starts from a finished run's ``adapter/`` or ``model/`` (``smalltune update``).

    >>> result = train(load_recipe("examples/dental/recipe.yaml", ["train.max_steps=20"]))
    >>> result.best_metrics["eval_ppl"]
    """
    if resume and recipe.output_dir:
        keep_recorded(recipe, recipe.output_dir)  # the precision the run started with
    accelerator = make_accelerator(recipe)
    if not recipe.output_dir and accelerator.num_processes > 1:
        recipe.output_dir = shared_output_dir(recipe)
    # Each building step is agreed by every rank: one rank's user error stops all of them at once.
    run = on_every_rank(accelerator, lambda: open_run_dir(recipe, resume, main=accelerator.is_main_process))  # locks first
    try:
        if resume and run.train_summary.exists():  # finished: its snapshots and checkpoints are gone
            return _finished(run, accelerator.is_main_process, verbose)
        set_seed(recipe.train.seed)

        def load_and_prepare():
            model, tok = base.fresh() if base else _load(recipe)
            # the base model scores targets
            return model, tok, prepare_data(recipe, tok, model, run.path, accelerator.device, splits=splits)

        model, tok, data = on_every_rank(accelerator, load_and_prepare)
        parts = setup(recipe, model, tok, data, accelerator, extra_plugins=plugins, init_from=init_from)
        # a run from a parent's weights does not start as the base: nothing to share
        return fit(parts, data, run, resume=resume, progress=progress, verbose=verbose,
                   base=base if init_from is None else None)
    finally:
        if run.lock is not None:
            run.lock.release()


def fit(parts: Parts, data: PreparedData, run: RunDir, resume: bool = False, progress: bool = True,
        verbose: bool = True, base: Base | None = None) -> TrainResult:
    """Train prepared ``parts`` on ``data`` into ``run``; the one loop every training goes through.

    ``base``: the loaded base the model was copied from (tuning, folds), which keeps the measurements of the
    untrained model for the next run on the same items."""
    p, recipe, t = parts, parts.recipe, parts.recipe.train
    acc, model, plugins, selector = p.accelerator, p.model, p.plugins, p.selector
    main = acc.is_main_process
    log = (lambda r: (run.log(r), plugins.log(r))) if main else (lambda r: None)  # one writer: the main process
    precision = choose_precision(t.precision, recipe)  # what make_accelerator chose (cached, not measured again)
    how = (recipe.eval.batch_size, precision.precision, str(acc.device))  # what else a measurement depends on

    def once(key: tuple, measure):
        """A measurement of the untrained base model: shared by the runs from one loaded base (tuning trials,
        folds), and kept on disk for later processes (base_cache; one process only: several ranks would each
        decide on their own whether to measure)."""
        key = (*key, *how)
        stored = (lambda: base_cache.remember(recipe, key, measure)) if acc.num_processes == 1 else measure
        return base.remember(key, stored) if base else stored()

    env = PluginEnv(model, p.tokenizer, acc.device, recipe.eval.batch_size, acc.autocast, acc.unwrap_model,
                    recipe=recipe, run_path=run.path, accelerator=acc, reference=data.reference, once=once,
                    as_base=lambda: base_view(p.unwrapped, p.base_weights),
                    examples=data.splits.train if data.splits else [])
    if main and verbose:
        console.train_header(recipe, data, p.trainable, p.total, run.path, precision)

    # --- plugins on the starting weights (before any resume, so anchors are the base) -------------
    info = plugins.setup(env)  # e.g. the EWC Fisher, the forgetting budget's base perplexity
    p.base_weights, env.as_base = None, _setup_only  # the base's host copy served setup's measurements: free it
    step = plugins.wrap_step(PlainStep(acc, list(model.parameters())))  # plain backward, or SAM's two passes
    regularizers = [x.name for x in plugins if x.name in _regularizer_names()]

    keep = keeps_logits(p.unwrapped)  # logits only where a label follows (loss.scored_positions)
    # the weights selection may still choose: in host memory in one process (no write per new best)
    snapshots = Snapshots(run, p.method, p.unwrapped, write=main, in_memory=acc.num_processes == 1)

    def objective(batch):
        """(task loss, total loss to minimise = task loss + plugin penalties) of one micro-batch."""
        logits, labels = batch_logits(model, batch, keep)
        task = causal_lm_loss(logits, labels)
        return task, task + plugins.penalty(model)

    def validation_metrics() -> dict:
        return dataset_metrics(model, data.validation, recipe.eval.batch_size, acc.device, p.tokenizer.pad_token_id,
                               acc.autocast)

    # --- resume, or start ---------------------------------------------------------------------------
    state = LoopState()
    if resume and (ckpt := latest_checkpoint(run)) is not None:
        if main:
            clean_interrupted(run)
        saved = load_checkpoint(ckpt, p.method, p.unwrapped, p.optimizer, p.scheduler, rank=acc.process_index)
        state = LoopState(**saved["loop"])
        selector.load_state_dict(saved["selector"])
        plugins.load_state_dict(saved["plugins"])
        if main:
            run.truncate_metrics_after(state.step)
        log({"type": "event", "event": "resume", "step": state.step, "checkpoint": ckpt.name})
        if main and verbose:
            console.info(f"resuming from {ckpt} (step {state.step} of {p.total_steps})")
    else:
        if main:
            clean_interrupted(run)
            write_record(run.path, data.splits, data.reference, _sources(recipe, data))
        state.base_eval = dict(_base_metrics(p, validation_metrics, once, items_key(data.validation)))
        log({"type": "event", "event": "start", "step": 0, "total_steps": p.total_steps, "eval_every": p.eval_every,
             "steps_per_epoch": p.steps_per_epoch, "processes": acc.num_processes, **data.counts(),
             "regularizers": regularizers, "precision": precision.to_dict(), **info, "base_eval": state.base_eval})
    # chosen from what is no worse than the start (an update: than its parent, within update.validation_slack)
    selector.loss_ceiling = _start_ceiling(recipe, state.base_eval, bool(p.started_from))

    def note(event: GuardEvent) -> None:
        state.note(event)
        log({"type": "event", "event": "guard", **event.to_dict()})

    def evaluate_and_checkpoint() -> None:
        """Validation metrics, plugins measure and check, best checkpoint, periodic checkpoint."""
        # one autocast context for the validation pass and the guards' passes: each weight is cast to bf16 once
        # per evaluation, not once per pass (autocast.cast_once; the same casts, so the same numbers)
        with acc.autocast(), cast_once(model):
            record = validation_metrics()
            record.update(step=state.step, epoch=round(state.step / p.steps_per_epoch, 3), train_loss=window_loss())
            events = plugins.evaluate(record, state.step, env)  # also adds each guard's signal to the record
        for event in events:
            note(event)
        keep_best(snapshots, selector, record, state.step, protect=state.protected)  # sees the guards' flags
        log({"type": "eval", **record, "best_step": selector.best_step})
        if main:
            bar.set_postfix(eval_loss=f"{record['eval_loss']:.3f}", best=selector.best_step)
        if checkpoint_due():
            checkpoint()

    def checkpoint_due() -> bool:
        """On the checkpoint cadence (``train.checkpoint_minutes``): the main process's clock decides for all."""
        due = _checkpoint_due(state, elapsed(), t.checkpoint_minutes)
        return gather_object([due])[0] if acc.num_processes > 1 else due

    def checkpoint() -> None:
        state.checkpointed_at, state.protected = elapsed(), sorted(selector.candidates())
        if main:  # a run resumed from this checkpoint may choose any of its candidates: they become files first
            snapshots.persist(state.protected, selector)
        rngs = gather_object([rng_state()]) if acc.num_processes > 1 else [rng_state()]
        snapshot = snapshot_path(run, state.step)  # this step's weights, when selection kept them
        # every rank: under FSDP2 the checkpoint gathers each rank's shard (a collective); the main process writes
        save_checkpoint(run, run.checkpoint(state.step), p.method, p.unwrapped,
                        {"loop": asdict(state) | {"elapsed": elapsed()}, "selector": selector.state_dict(),
                         "plugins": plugins.state_dict()}, p.optimizer, p.scheduler, rngs, write=main,
                        weights_from=snapshot if state.step in state.protected else None)
        if main:
            prune_checkpoints(run, t.keep_checkpoints)

    # --- the loop -----------------------------------------------------------------------------------
    started = time.perf_counter() - state.elapsed
    elapsed = lambda: time.perf_counter() - started  # noqa: E731
    recent: list[float] = []
    window_loss = lambda: sum(recent) / len(recent) if recent else None  # noqa: E731
    bar = console.progress(p.total_steps, state.step, disable=not (progress and main))
    model.train()
    while state.step < p.total_steps and state.stop_reason is None:
        set_epoch(p.loader, state.epoch)  # the loop's epoch, not the loader's own counter (exact resume)
        p.method.on_epoch_start(p.unwrapped, state.epoch, t.seed)
        skip = state.batches_in_epoch
        batches = acc.skip_first_batches(p.loader, skip) if skip else p.loader
        for batch in batches:
            with acc.accumulate(model):
                loss, _ = step(lambda: objective(batch))  # forward and backward
                grad_norm = None
                if acc.sync_gradients and (t.max_grad_norm or plugins.wants_grad_norm):
                    grad_norm = float(acc.clip_grad_norm_(model.parameters(), t.max_grad_norm or math.inf))
                if (event := agreed(acc, plugins.check_step(loss.item(), grad_norm, state.step + 1))) is not None:
                    note(event)
                    break  # before optimizer.step(): no non-finite update reaches the weights
                p.optimizer.step()
                if acc.sync_gradients and not acc.optimizer_step_was_skipped:
                    p.scheduler.step()  # once per optimizer step, whatever the number of processes
                p.optimizer.zero_grad(set_to_none=True)
            shown, tokens = over_ranks(acc, loss, batch)  # what the update saw: every rank's micro-batch
            state.batches_in_epoch += 1
            state.train_tokens += tokens
            recent.append(shown)
            if not acc.sync_gradients:
                continue
            state.step += 1
            log({"type": "train", "step": state.step, "epoch": round(state.step / p.steps_per_epoch, 3),
                 "loss": shown, "lr": p.scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                 "tokens": state.train_tokens, "elapsed": round(elapsed(), 2), **plugins.metrics()})
            bar.update(1)
            bar.set_postfix_str(f"loss={shown:.3f}", refresh=False)
            if state.step % p.eval_every == 0 or state.step == p.total_steps:
                evaluate_and_checkpoint()
                recent.clear()
            if state.stop_reason or state.step >= p.total_steps:
                break
        else:
            state.epoch += 1
            state.batches_in_epoch = 0
    bar.close()
    plugins.close()

    # --- finish: restore the best checkpoint, publish it if it beats the base, summarise --------------
    publish, why_not = _publishable(p, snapshots, selector, state)
    if main and publish:
        tmp = run.path / f".{p.method.artifact}.tmp"
        p.method.save(p.unwrapped, tmp)
        p.tokenizer.save_pretrained(tmp)  # the artifact folder then stands alone (chat template included)
        publish_dir(tmp, run.path / p.method.artifact)
    acc.wait_for_everyone()  # every process has restored the chosen weights before they go
    if main:
        if not publish and state.keeps_weights:  # best/ keeps the choice; a published artifact holds it instead
            snapshots.persist([selector.best_step], selector)
        snapshots.drop()
    if why_not:
        state.stop_message = "; ".join(x for x in (state.stop_message, why_not) if x)
    planned = math.ceil(t.epochs * p.steps_per_epoch)
    stopped = state.stop_reason or ("max_steps" if state.step < planned else "completed")
    result = TrainResult(
        run_dir=str(run.path), stopped=stopped, stop_message=state.stop_message,
        steps=state.step, epochs=round(state.step / p.steps_per_epoch, 3),
        best_step=selector.best_step, best_metrics=selector.best_record, selection=selector.reason(),
        train_tokens=state.train_tokens, wall_seconds=round(elapsed(), 2),
        trainable_params=p.trainable, total_params=p.total,
        data={"validation_source": data.validation_source, "train": data.train_stats.to_dict(),
              "validation": data.validation_stats.to_dict(), "transforms": data.transforms,
              "regularizers": {"names": regularizers, **info}, "processes": acc.num_processes},
        events=state.events, guards=plugins.summary(), artifact_written=publish, base_metrics=state.base_eval,
    )
    if main:
        log({"type": "event", "event": "end", "step": state.step, "stopped": stopped})
        result.provenance = provenance(recipe, **data.counts())
        atomic_write_json(run.train_summary, result.to_dict())
        # after the summary, which ends the run: a kill between leaves them for _finished
        drop_checkpoints(run, drop_best=publish or not state.keeps_weights)
        if verbose:
            console.train_footer(result)
    # No rank leaves before the main process has written everything: a launcher (torchrun) stops the
    # other ranks as soon as one exits with a non-zero code, e.g. after an agreed guard stop.
    acc.wait_for_everyone()
    return result


# --- helpers of the loop (each a decision the loop would otherwise spell out inline) -------------------
def _load(recipe):
    from ..models import load_from_recipe

    return load_from_recipe(recipe)


def _finished(run: RunDir, main: bool, verbose: bool) -> TrainResult:
    """``--resume`` on a run that already finished: its summary, nothing trained again (a checkpoint left by a kill
    after the summary would redo the steps after it and could not find the dropped best-model snapshots)."""
    result = TrainResult.from_dict(json.loads(run.train_summary.read_text(encoding="utf-8")), str(run.train_summary))
    if main:  # left by a run killed after its summary was written (an abandoned run keeps no best/ either)
        drop_checkpoints(run, drop_best=result.artifact_written or not keeps_weights(result.events))
    if main and verbose:
        console.info(f"{run.path}: training already finished ({result.stopped} at step {result.steps}); nothing to resume")
    return result


def _checkpoint_due(state: LoopState, now: float, minutes: float) -> bool:
    """Whether an evaluation at training second ``now`` also writes a --resume checkpoint."""
    return now - state.checkpointed_at >= 60 * minutes


def _regularizer_names() -> set[str]:
    from .regularize import REGULARIZERS

    return {name for name, _ in REGULARIZERS.items()}


def _sources(recipe, data: PreparedData) -> dict:
    """Which source served which purpose in this run (measurement sources are never trained on)."""
    t = data.transforms
    return {"train": recipe.data.train, "validation": data.validation_source,
            "replay": t.get("replay_source"), "ewc_fisher": "reference text, training pool" if recipe.regularize.ewc_lambda else None,
            "forgetting_guard": "reference text, measurement paragraphs" if recipe.guards.forgetting_budget is not None else None,
            "evaluation_reference": "reference text, measurement paragraphs (splits.json reference.measure)",
            "evaluation_general_questions": "capitals (gensim questions-words) and chatterbot-corpus: measurement only"}


def _setup_only():
    raise RuntimeError("PluginEnv.as_base() is for a plugin's setup only (the base's weights are freed after it)")


def _base_metrics(p: Parts, validation_metrics, once, key: str) -> dict:
    """Where the run starts, on the validation set: the untrained model (adapters disabled, or the weights before
    step 1), or in a run from a parent's weights (an update) those weights, with an adapter on: what the user keeps
    when this run publishes nothing (``_publishable``)."""
    if p.started_from:  # the parent's weights: this run's own start, never shared with other runs
        return validation_metrics()
    return once(("validation", key), lambda: _untrained_metrics(p, validation_metrics))


def _untrained_metrics(p: Parts, validation_metrics) -> dict:
    with base_view(p.unwrapped, None):
        return validation_metrics()


def _start_ceiling(recipe, base_eval: dict | None, started_from: bool) -> float | None:
    """The validation loss a published checkpoint may reach: where the run started, plus noise (a near-untrained
    adapter, LoRA starting as the base, may differ in the 4th decimal). A run from a parent's weights (an update)
    has ``update.validation_slack`` instead, or no ceiling where that is empty: its regression gate judges it."""
    if not base_eval:
        return None
    slack = recipe.update.validation_slack if started_from else max(recipe.early_stopping.min_delta,
                                                                     WORSE_THAN_BASE_SLACK)
    return None if slack is None else base_eval["eval_loss"] + slack


def _publishable(p: Parts, snapshots: Snapshots, selector, state: LoopState) -> tuple[bool, str]:
    """Restore the chosen checkpoint; publish it unless the run was abandoned, nothing safe was chosen or it is worse
    than the start."""
    if not state.keeps_weights:
        return False, f"{state.stop_reason} abandoned the run, so no {p.method.artifact}/ was written"
    chosen = restore_best(snapshots, selector)
    if not chosen and state.stop_reason in UNSAFE_STOPS:
        return False, f"no checkpoint passed the guards, so no {p.method.artifact}/ was written"
    best, base, ceiling = selector.best_record, state.base_eval, selector.loss_ceiling
    if chosen and best and ceiling is not None and best["eval_loss"] > ceiling:  # no evaluation was under it
        return False, (f"the best checkpoint (step {selector.best_step}, validation loss {best['eval_loss']:.3f}) is "
                       f"worse than {'the weights it started from' if p.started_from else 'the base model'} "
                       f"({base['eval_loss']:.3f}), so no {p.method.artifact}/ was written")
    return True, ""
