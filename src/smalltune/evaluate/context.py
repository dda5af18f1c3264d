"""What every probe gets: the fine-tuned model, a way to run the base model on the same inputs,
cached generation and per-item scoring, the recipe, the sample caps and a seeded RNG.

Base outputs come from :class:`~smalltune.train.artifact.ModelPair`, as in ``smalltune chat``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from .. import base_cache
from ..errors import SmalltuneError
from ..generate import GenerationSettings, generate_text
from ..recipe import EvalSection
from ..train.artifact import ModelPair
from ..train.autocast import cast_once
from ..train.loss import item_token_stats
from ..train.precision import recorded_precision

MODELS = ("base", "finetuned")
# The base model's greedy answers and losses do not depend on the run being evaluated: every evaluation in one
# process (the demo's two arms, cv folds, tuning trials) shares them, keyed by what the base outputs depend on
# (EvalContext.base_key). Fine-tuned outputs stay per context, and so do the update gate's parent's. The base's
# answers and losses are also kept on disk (eval.cache_base_answers), so later processes share them too.
_BASE_RESULTS: dict[tuple, dict] = {}
# How each kind of base output is kept on disk: (JSON field, encode the cache, decode it). Answers are keyed by
# (new tokens, prompt); per-item losses by a hash of the tokenised items, as (summed loss, tokens, correct) rows.
_ON_DISK = {
    "generate": ("answers", lambda cache: [[new, prompt, answer] for (new, prompt), answer in cache.items()],
                 lambda rows: {(int(new), str(prompt)): str(answer) for new, prompt, answer in rows}),
    "losses": ("losses", lambda cache: [[key, [list(r) for r in stats]] for key, stats in cache.items()],
               lambda rows: {str(key): [(float(l), int(n), int(c)) for l, n, c in stats] for key, stats in rows}),
}
_EVAL = EvalSection()  # the recipe's defaults: Caps() and EvalContext() evaluate as a default recipe does


@dataclass
class Caps:
    """How many items each probe looks at (None = all); the recipe's ``eval`` caps, or QUICK's."""

    test: int | None = _EVAL.test_samples
    memorization: int | None = _EVAL.memorization_samples
    reference_paragraphs: int = _EVAL.reference_paragraphs
    probe_questions: int = _EVAL.probe_questions
    perturbations: int | None = None  # None = every perturbation
    variants: int | None = None  # perturbed variants per question (several rephrasings); None = all
    prefix: int | None = None  # training answers also checked by prefix extraction; None = all sampled
    max_new_tokens: int = _EVAL.max_new_tokens


# Deliberately smaller than the recipe's defaults: sized so `evaluate --quick` on the built-in 135M model
# stays at a few minutes on 2 CPU cores (about 180 greedy answers of <= 40 tokens per evaluation, base
# and fine-tuned together, plus the 2 x 200 general questions of <= 24 tokens, which are not capped
# lower: fewer than 200 cannot show a change of a few points; see docs/evaluation.md).
QUICK = Caps(test=16, memorization=16, reference_paragraphs=8, probe_questions=200, perturbations=2, variants=1,
             prefix=8, max_new_tokens=40)


# Generation batches are this many evaluation batches: a decoding step holds only the KV cache, no activations
# for backward, and reading the weights dominates small batches on a CPU (192 general questions, 24 new tokens, the
# 135M model, 2 cores: batch 16 took 26-28 s, batch 64 18 s; a cold evaluation's 1,224 base answers with
# continuous batching joining at 1/8 free, greedy.py: 64 places 152 s, 128 places 135 s, 256 places 127 s, fp32).
GENERATION_BATCH_FACTOR = 8
# A pass of many prompts takes twice the places, as long as they stay at most half of its prompts: 256 places made
# a cold full bf16 evaluation of the demo's default run (1,224 prompts a model) 0.91x as long (5 alternating pairs,
# Zen 5 EPYC), but the demo's quick evaluation (~270 prompts a model, nearly all in the first chunk, so little left to
# refill the places short answers free) 1.14x (2 pairs); benchmarks/README.md, "256 places".
WIDE_PASS_SHARE = 2
# Fewer places where their KV cache would not fit: it may take this share of the memory the weights leave (the rest
# is for a chunk's prefill activations, the logits, the process and the OS). The built-in model at 288 positions
# needs 26 MB a place (fp32, room for doubling); a 1.7B model without grouped KV heads needs 226 MB, so 128 places
# would want 29 GB.
KV_SHARE = 0.5


def evaluation_precision(recipe, run_dir=None) -> tuple[str, str]:
    """(fp32 | bf16, why): what ``eval.precision`` evaluates in. ``auto`` follows the run's training (its start
    event): a run trained under bf16 autocast, chosen by ``train.precision: auto`` where bf16 measured faster, is
    evaluated in bf16 too, else in fp32 (fp16 training included: evaluation has no fp16 mode). On an AMX Xeon the
    demo's bf16 run evaluated in 171 s in bf16 against 274 s in fp32, every metric inside the fp32 CIs
    (benchmarks/README.md, "Evaluation in the training's precision")."""
    wanted = recipe.eval.precision
    if wanted != "auto":
        return wanted, "set in the recipe"
    trained = recorded_precision(run_dir).get("precision") if run_dir else None
    if not trained:
        return "fp32", "auto: the run recorded no training precision"
    return ("bf16" if trained == "bf16" else "fp32"), f"auto: the run trained in {trained}"


@dataclass
class EvalContext:
    model: Any  # the fine-tuned model (a PeftModel for adapter methods)
    tokenizer: Any
    recipe: Any
    run_dir: Any
    caps: Caps
    seed: int = 0
    test: list = field(default_factory=list)  # held-out Examples (the test set, else validation)
    test_source: str = ""
    reference_texts: list[str] = field(default_factory=list)
    reference_source: str = ""
    progress: bool = True
    batch_size: int = _EVAL.batch_size
    precision: str = ""  # fp32 | bf16; empty: eval.precision resolved for run_dir (evaluation_precision)
    precision_reason: str = ""
    samples: list = field(default_factory=list)  # per-question answers, filled by the task probe
    _gen_cache: dict = field(default_factory=dict)
    _base_generated: set = field(default_factory=set)
    _base_reused: set = field(default_factory=set)
    phase_seconds: dict = field(default_factory=dict)  # phase -> wall seconds (EvalSettings.phase_seconds)
    _files: dict = field(default_factory=dict)  # kind -> the file keeping the base model's outputs (_file)
    _pass_prompts: int = field(default=0, init=False, repr=False)  # distinct prompts of the pass per model (prefetch)
    _models: ModelPair = field(init=False, repr=False)
    # "base" is the recipe's base model (False where a subclass puts another model there: the update gate's parent)
    BASE_IS_BASE_MODEL: ClassVar[bool] = True

    def __post_init__(self):
        self._models = ModelPair(self.model, self.recipe)
        if not self.precision:
            self.precision, self.precision_reason = evaluation_precision(self.recipe, self.run_dir)

    @property
    def system_prompt(self) -> str | None:
        return self.recipe.data.system_prompt

    @property
    def device(self):
        return next(self.model.parameters()).device

    def rng(self, salt: str) -> random.Random:
        """A seeded RNG per purpose, so adding a probe never changes another probe's samples."""
        return random.Random(f"{self.seed}:{salt}")

    def sample(self, items: list, cap: int | None, salt: str) -> list:
        """Up to ``cap`` items, a seeded random subset in the original order."""
        if cap is None or len(items) <= cap:
            return list(items)
        keep = sorted(self.rng(salt).sample(range(len(items)), cap))
        return [items[i] for i in keep]

    def use(self, which: str):
        """A context yielding the model called ``which`` ("base" or "finetuned") ready for inference."""
        return self._models.use(which)

    def settings(self) -> GenerationSettings:
        """How every answer is generated (the caps' length: a probe may ask for fewer tokens per prompt)."""
        return GenerationSettings(max_new_tokens=self.caps.max_new_tokens, batch_size=self.places)

    def weight_bytes(self) -> int:
        """The weights both models hold in memory (an adapter's base is the trained model's own)."""
        return model_bytes(self.model) * (1 if self._models.shares_weights else 2)

    def cast_bytes(self) -> int:
        """The bf16 copies of one model's fp32 weights a bf16 pass keeps (train/autocast.py: cast once a pass)."""
        if self.precision != "bf16":
            return 0
        return sum(p.numel() * 2 for p in self.model.parameters() if p.element_size() == 4 and p.is_floating_point())

    @cached_property
    def places(self) -> int:
        """Prompts generated at once: :data:`GENERATION_BATCH_FACTOR` x the evaluation batch, twice that where the
        pass has at least :data:`WIDE_PASS_SHARE` x as many prompts, fewer (said once) where their KV cache would not
        fit beside both models' weights in the device's usable memory. Fixed at first use (the base answers' cache
        key holds it): :meth:`prefetch` tells the pass's size before anything generates."""
        from .. import console
        from ..kv_cache import bytes_per_position
        from ..plan.hardware import GIB, detect_device

        wanted = GENERATION_BATCH_FACTOR * self.batch_size
        if self._pass_prompts >= WIDE_PASS_SHARE * 2 * wanted:
            wanted *= 2
        weights = self.weight_bytes() + self.cast_bytes()
        usable = detect_device().usable
        positions = self.recipe.data.max_length + self.caps.max_new_tokens  # a prompt and its longest answer
        element = 2 if self.precision == "bf16" else next(self.model.parameters()).element_size()
        per_place = 2 * positions * bytes_per_position(self.model, element)  # x2: a buffer doubles when full
        fit = max(1, int(max(usable - weights, 0) * KV_SHARE // per_place))
        if fit < wanted:
            console.warn(f"evaluation: generating {fit} prompts at a time instead of {wanted}: each one's KV cache "
                         f"({per_place / GIB:.2f} GiB at {positions} positions) must fit beside the weights in "
                         f"{usable / GIB:.1f} GiB of usable memory")
        return min(wanted, fit)

    def base_key(self) -> tuple:
        """What the base model's outputs depend on: the model, its loading, precision, device and batching."""
        return (*base_cache.model_key(self.recipe), self.recipe.train.precision,
                self.precision, str(self.device), self.batch_size, self.places)

    def autocast(self):
        """The context every generation and loss pass runs in (:attr:`precision`): bf16 autocast, or nothing."""
        if self.precision == "bf16":
            import torch

            if self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
                raise SmalltuneError("eval.precision: bf16, but this GPU has no bf16 support; set eval.precision: fp32")
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    @property
    def base_answers_reused(self) -> int:
        """Base answers this evaluation took from an earlier one (in this process, or on disk)."""
        return len(self._base_reused)

    @property
    def base_answers_generated(self) -> int:
        """Base answers this evaluation generated itself (kept for later ones where :attr:`base_answers_kept`)."""
        return len(self._base_generated)

    @property
    def base_answers_kept(self) -> bool:
        """Whether the base model's outputs outlive this process (``eval.cache_base_answers``, the recipe's base)."""
        return self.BASE_IS_BASE_MODEL and self.recipe.eval.cache_base_answers

    def _shared(self, which: str) -> bool:
        """Whether ``which``'s outputs are the recipe's base model's, shared across evaluations and kept on disk."""
        return which == "base" and self.BASE_IS_BASE_MODEL

    def _cache(self, which: str, kind: str) -> dict:
        if not self._shared(which):
            return self._gen_cache.setdefault((which, kind), {})
        key = (kind, *self.base_key())
        if key not in _BASE_RESULTS:
            _BASE_RESULTS[key] = self._read(kind)
        return _BASE_RESULTS[key]

    def _file(self, kind: str) -> Path | None:
        """Where the base model's outputs of ``kind`` are kept between processes (None: not kept)."""
        if not self.recipe.eval.cache_base_answers:
            return None
        if kind not in self._files:  # hashed once per context
            self._files[kind] = base_cache.path(kind, self.base_key())
        return self._files[kind]

    def _read(self, kind: str) -> dict:
        field_name, _, decode = _ON_DISK[kind]
        rows = base_cache.read(self._file(kind), field_name)
        try:  # anything unreadable is a cache miss, never an error
            return decode(rows) if rows is not None else {}
        except (ValueError, TypeError):
            return {}

    def _write(self, kind: str, cache: dict) -> None:
        if (path := self._file(kind)) is not None:
            field_name, encode, _ = _ON_DISK[kind]
            base_cache.write(path, field_name, encode(cache), self.recipe.model.name)

    def generate(self, prompts: list[str], which: str, max_new_tokens: int | list[int] | None = None,
                 desc: str = "") -> list[str]:
        """Greedy continuations of rendered ``prompts`` by one model, each capped at its ``max_new_tokens`` entry
        (one number for all; None = the caps'); one generation pass for what the cache does not hold yet."""
        keys = list(zip(self._limits(max_new_tokens, len(prompts)), prompts))  # cache keys: (new tokens, prompt)
        cache = self._cache(which, "generate")
        missing = [k for k in dict.fromkeys(keys) if k not in cache]
        if self._shared(which):  # answers this evaluation did not generate itself: an earlier one's, or the disk's
            self._base_reused |= set(keys) - set(missing) - self._base_generated
            self._base_generated |= set(missing)
        if missing:
            bar = _bar(len(missing), f"{desc} ({which})", not self.progress)
            with self.use(which) as model, self.autocast(), cast_once(model):
                outs = generate_text(model, self.tokenizer, [p for _, p in missing], self.settings(), progress=bar,
                                     limits=[new for new, _ in missing])
            bar.close()
            cache.update(zip(missing, outs))
            if self._shared(which):
                self._write("generate", cache)
        return [cache[k] for k in keys]

    def _limits(self, max_new_tokens: int | list[int] | None, n: int) -> list[int]:
        if isinstance(max_new_tokens, list):
            return max_new_tokens
        return [max_new_tokens or self.caps.max_new_tokens] * n

    def prefetch(self, requests) -> None:
        """Answer every probe's prompts up front, in one generation pass per model: the probes then read the
        cache. A pass costs about its longest answer's decoding steps whatever its size (rows leave the batch
        at their own length), and the quick evaluation's probes ask 8-16 prompts each (benchmarks/README.md,
        "One generation pass per model"). ``requests``: (prompts, max_new_tokens as for :meth:`generate`)."""
        prompts, limits = [], []
        for asked, new in requests:
            prompts += asked
            limits += self._limits(new, len(asked))
        if "places" not in self.__dict__:  # not fixed yet: sized for this pass
            self._pass_prompts = len(set(zip(limits, prompts)))
        for which in MODELS:
            with self.timed(f"answers ({which})"):
                self.generate(prompts, which, limits, "answers")

    @contextmanager
    def timed(self, phase: str):
        """Add the wall time of the block to ``phase_seconds[phase]``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - started
            self.phase_seconds[phase] = round(self.phase_seconds.get(phase, 0.0) + spent, 1)

    def render(self, conversation: list[dict]) -> str:
        from ..data.tokenize import render

        return render(self.tokenizer, conversation, add_generation_prompt=True)

    def item_losses(self, items: list, which: str) -> list[tuple[float, int, int]]:
        """Per tokenised item: (summed loss, labelled tokens, correct next-token predictions)."""
        cache = self._cache(which, "losses")
        key = hashlib.sha256(json.dumps([[i.input_ids, i.labels] for i in items]).encode()).hexdigest()
        if key not in cache:
            with self.use(which) as model:
                cache[key] = item_token_stats(model, items, self.batch_size, self.device, self.tokenizer.pad_token_id,
                                              self.autocast)
            if self._shared(which):
                self._write("losses", cache)
        return cache[key]


def model_bytes(model) -> int:
    """Bytes of a model's parameters."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def weighted_loss(rows) -> float:
    """Token-weighted mean loss of (loss_sum, tokens[, correct]) rows."""
    if len(rows) == 0:  # every example lost its answer to truncation: no number would be honest
        raise SmalltuneError("evaluation: no example has an answer token left within data.max_length; "
                             "raise data.max_length or check the test file")
    return float(rows[:, 0].sum() / max(rows[:, 1].sum(), 1))


def weighted_ppl(rows) -> float:
    return math.exp(min(weighted_loss(rows), 50.0))


def weighted_acc(rows) -> float:
    return float(rows[:, 2].sum() / max(rows[:, 1].sum(), 1))


def _bar(total: int, desc: str, disable: bool):
    from tqdm.auto import tqdm
    import sys

    return tqdm(total=total, desc=desc.strip(), unit="prompt", disable=disable, dynamic_ncols=True,
                file=sys.stderr, mininterval=0.5, leave=False)
