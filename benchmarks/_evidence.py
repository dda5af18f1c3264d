"""Shared plumbing of the evidence benchmarks (issue 9): the data, one arm = train (+ evaluate), rows
appended per (arm, seed) so an interrupted experiment resumes, mean ± std, result files with provenance.

Every experiment trains the built-in model on a fixed, category-stratified subset of the demo's
training file (``--train-size``, 100 by default: the small-data regime these recipes are for, and
affordable on a 2-core CPU), validates on the demo's validation file and evaluates on its test file
(72 rephrased questions with key facts). The subset does not depend on the run seed, so seeds vary
only initialisation, shuffling and dropout.

Evaluation is base vs fine-tuned on the same inputs (``smalltune.evaluate``); the base model's
answers and losses are the same for every arm, so evaluate computes them once per process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "dental"
RESULTS = Path(os.environ.get("SMALLTUNE_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))
WORK = Path(os.environ.get("SMALLTUNE_BENCH_WORK", "/tmp/smalltune-bench"))  # run directories (large; not committed)
# Smoke test of the plumbing: SMALLTUNE_BENCH_MAX_STEPS=2 caps every run (numbers meaningless).
MAX_STEPS = os.environ.get("SMALLTUNE_BENCH_MAX_STEPS")


def commit() -> str:
    """The checkout's short commit, for result rows (an interrupted measurement resumes only on the same code)."""
    import subprocess

    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").exists() else platform.machine()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d")}


def memory_as_the_cli(parser: argparse.ArgumentParser) -> None:
    """A ``--glibc-default`` flag; :func:`apply_cli_memory` then keeps freed memory in this process as every
    ``smalltune`` command does (``smalltune.memory``) unless it is given, so an in-process measurement of training
    sees the allocator a user's run gets."""
    parser.add_argument("--glibc-default", action="store_true",
                        help="glibc's default allocator behaviour (the smalltune CLI keeps freed memory)")


def apply_cli_memory(args: argparse.Namespace) -> bool:
    """Keep freed memory unless ``--glibc-default``; True where it applied (recorded in the benchmark's output)."""
    from smalltune.memory import keep_freed_memory

    return False if args.glibc_default else keep_freed_memory()


def timer(spent: dict, name: str, fn):
    """``fn`` that adds its wall time to ``spent[name]`` (a ``defaultdict(float)``): a ``perf_counter`` around each
    call, not a profiler, whose per-call cost would inflate the Python being measured."""
    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - t0

    return timed


def alternate_pairs(out: Path, arms: tuple[str, str], pairs: int, measure, same: dict) -> list[dict]:
    """``measure(arm, pair) -> row`` for ``pairs`` pairs of the two ``arms``, the order flipping each pair so a
    machine's drift hits both alike. One row per (arm, pair) is appended to ``out`` with ``same`` (the settings the
    rows must share), the commit and the machine; rows already there for this commit, CPU and settings are not
    measured again, so an interrupted measurement resumes. Returns every row of the ``pairs`` pairs, kept or new,
    by pair."""
    where, at = machine(), commit()
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    done = {(r["arm"], r["pair"]): r for r in rows if r["commit"] == at and r.get("machine", {}).get("cpu") ==
            where["cpu"] and all(r.get(k) == v for k, v in same.items())}
    for pair in range(pairs):
        for arm in arms if pair % 2 == 0 else arms[::-1]:
            if (arm, pair) in done:
                continue
            row = {"arm": arm, "pair": pair, **measure(arm, pair), **same, "commit": at, "machine": where}
            done[arm, pair] = row
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps({k: v for k, v in row.items() if k != "machine"}), flush=True)
    return [done[arm, pair] for pair in range(pairs) for arm in arms]


def alternate_rounds(arms: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds of each ``arms[name]()`` call over ``rounds`` rounds, the order flipping each round so a machine's
    drift hits every arm alike (in-process timings; :func:`alternate_pairs` is for whole runs kept as rows)."""
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(rounds):
        for name in list(arms) if r % 2 == 0 else list(arms)[::-1]:
            t0 = time.perf_counter()
            arms[name]()
            seconds[name].append(round(time.perf_counter() - t0, 4))
    return seconds


class DemoEvaluation:
    """A training evaluation of the demo recipe as full fine-tuning runs it on a CPU: the built-in model in training
    mode (every weight trainable), attention set up as training sets it (``train/attention.py``), prepared by
    accelerate as training prepares it (under bf16, its forward wrapped in autocast and fp32 outputs), the demo's
    validation file and the forgetting guard's own reference windows, under bf16 autocast or in plain fp32."""

    def __init__(self, precision: str = "bf16"):
        from accelerate import Accelerator

        from smalltune import load_recipe
        from smalltune.data.tokenize import tokenize_examples
        from smalltune.models import load_model
        from smalltune.train.attention import fp32_attention
        from smalltune.train.guards.forgetting import reference_items
        from smalltune.train.splits import GUARD_PARAGRAPHS, load_splits, reference_roles

        self.recipe = recipe = load_recipe(DEMO / "recipe.yaml")
        self.model, self.tok = load_model(recipe.model.name)
        self.model.train()
        fp32_attention(self.model)
        acc = Accelerator(mixed_precision="bf16" if precision == "bf16" else "no", cpu=True)
        self.model = acc.prepare(self.model)
        self.autocast = acc.autocast  # what training's evaluation enters
        d, splits = recipe.data, load_splits(recipe)
        self.validation, _ = tokenize_examples(self.tok, splits.validation, d.max_length, d.system_prompt)
        self.train, _ = tokenize_examples(self.tok, splits.train, d.max_length, d.system_prompt)
        texts = reference_roles(recipe).take_measure("measure_forgetting_guard", GUARD_PARAGRAPHS)
        self.reference = reference_items(self.tok, texts, recipe.guards.reference_tokens)

    def _metrics(self, items, accuracy: bool) -> dict:
        from smalltune.train.loss import dataset_metrics

        return dataset_metrics(self.model, items, self.recipe.eval.batch_size, "cpu", self.tok.pad_token_id,
                               self.autocast, accuracy)

    def validation_pass(self) -> dict:
        return self._metrics(self.validation, accuracy=True)

    def guard_pass(self) -> dict:
        return self._metrics(self.reference, accuracy=False)  # perplexity only, as the guard measures


def demo_evaluation_cli(doc: str, rounds: int, precision: bool = False) -> tuple[argparse.Namespace, DemoEvaluation]:
    """The command line of an in-process A/B over :class:`DemoEvaluation` (``--rounds N``, with ``precision`` also
    ``--precision bf16|fp32``): the parsed arguments and the evaluation set up (one per process: accelerate keeps
    its first precision)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--rounds", type=int, default=rounds)
    if precision:
        p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                       help="bf16 autocast (attention in fp32) or plain fp32")
    args = p.parse_args()
    return args, DemoEvaluation(getattr(args, "precision", "bf16"))


def cold_evaluation(run: Path, tag: str, quick: bool = False) -> dict:
    """Evaluate ``run`` cold in this process (no base outputs kept from earlier calls, a new answer-cache folder
    named by ``tag``, so the base model's answers are generated too): its seconds, precision, where eval.json says
    the time went, and a hash of every probe's results (arms expected to compute the same numbers compare it)."""
    import hashlib
    import shutil

    from smalltune.evaluate import context, evaluate

    context._BASE_RESULTS.clear()
    cache = WORK / "cold-eval" / f"answers-{tag}"
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["SMALLTUNE_ANSWER_CACHE"] = str(cache)
    started = time.perf_counter()
    evaluate(run, quick=quick, progress=False)
    seconds = round(time.perf_counter() - started, 2)
    result = json.loads((run / "eval.json").read_text())
    probes = json.dumps(result["probes"], sort_keys=True)
    return {"eval_seconds": seconds,
            "precision": result["settings"]["generation"]["precision"],
            "phase_seconds": result["settings"]["phase_seconds"],
            "probes_sha256": hashlib.sha256(probes.encode()).hexdigest()[:16]}


def cold_evaluation_pairs(description: str, out: Path, arms: tuple[str, str], one) -> None:
    """The command line of an A/B of cold evaluations of one run (``RUN --pairs N [--quick]``): ``one(run, arm, pair,
    quick) -> row`` measured in alternating pairs (:func:`alternate_pairs`)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("run", type=Path)
    p.add_argument("--pairs", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    alternate_pairs(out, arms, args.pairs, lambda arm, pair: one(args.run, arm, pair, args.quick),
                    {"quick": args.quick, "run": str(args.run)})


def demo_subset(n: int) -> Path:
    """The first ``n`` demo training examples of a fixed category-stratified shuffle (seed 0), as a file."""
    path = WORK / "data" / f"train-{n}.jsonl"
    if path.exists():
        return path
    lines = (DEMO / "train.jsonl").read_text().splitlines()
    by_cat = defaultdict(list)
    for line in lines:
        by_cat[json.loads(line).get("category")].append(line)
    rng = random.Random(0)
    for rows in by_cat.values():
        rng.shuffle(rows)
    # round-robin over categories, so every prefix is balanced
    order = [rows[i] for i in range(max(map(len, by_cat.values()))) for _, rows in sorted(by_cat.items()) if i < len(rows)]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_text(path, "\n".join(order[:n]) + "\n")
    return path


# Every row so far trained in fp32: `train.precision: auto` chose fp32 on the CPUs they ran on, and picks bf16 on
# one with a fast bf16 path (a Zen 4 EPYC measured 1.6-2.2x), which would make seeds of one arm differ in precision.
PRECISION = "train.precision=fp32"


def data_overrides(train_file: Path, seed: int, out: Path) -> list[str]:
    return [f"data.train={train_file}", f"data.validation={DEMO / 'validation.jsonl'}", f"data.test={DEMO / 'test.jsonl'}",
            f"train.seed={seed}", f"output_dir={out}", "name=bench", PRECISION]


VANILLA = ["guards.enabled=false", "early_stopping.enabled=false", "eval.every_steps=100000",  # final weights kept
           "train.scheduler=linear", "train.warmup_ratio=0", "train.weight_decay=0",  # transformers.Trainer defaults
           # the demo recipe these arms start from carries smalltune's replay and selection since issue 14
           "regularize.replay_ratio=0", "early_stopping.min_delta=0"]
"""What 'vanilla' means here: no validation-based stopping or selection, no guards, the Trainer's defaults."""


def train_run(base_recipe: Path, overrides: list[str]) -> dict:
    """Train one arm (resuming a killed one); the train summary plus the wall time of the call."""
    from smalltune import load_recipe, train
    from smalltune.rundir import RunDir

    recipe = load_recipe(base_recipe, overrides + ([f"train.max_steps={MAX_STEPS}"] if MAX_STEPS else []))
    out = Path(recipe.output_dir)
    summary_file = out / "train_summary.json"
    if summary_file.exists():
        return json.loads(summary_file.read_text())
    t0 = time.perf_counter()
    result = train(recipe, resume=RunDir(out).started, progress=False)
    return {**result.to_dict(), "call_seconds": round(time.perf_counter() - t0, 1)}


def eval_records(run_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (Path(run_dir) / "metrics.jsonl").read_text().splitlines()) if r["type"] == "eval"]


# --- evaluation -----------------------------------------------------------------------------------

def eval_caps(test: int | None = None, memorization: int = 48, reference: int = 16, probes: int = 200,
              max_new_tokens: int = 48, perturbations: int | None = 3):
    """Evaluation caps of one arm. 200 general questions (issue 14 item 5): 32 gave ±18 points of noise."""
    from smalltune.evaluate.context import Caps

    if MAX_STEPS:  # smoke test: a handful of items everywhere
        test, memorization, reference, probes, max_new_tokens = 4, min(memorization, 4), min(reference, 2), min(probes, 4), 8
    return Caps(test=test, memorization=memorization, reference_paragraphs=reference, probe_questions=probes,
                perturbations=perturbations, variants=1, prefix=16, max_new_tokens=max_new_tokens)


def evaluate_run(run_dir: Path, caps, probes=("task", "memorization", "forgetting")) -> dict:
    """Headline numbers of ``smalltune.evaluate`` (eval.json stays in the run directory)."""
    from smalltune.evaluate import runner

    if not (Path(run_dir) / "eval.json").exists():
        runner.caps_from_recipe = lambda recipe, quick: caps  # the benchmark's caps, not the recipe's
        runner.evaluate(run_dir, probes=list(probes), progress=False)
    return headline(json.loads((Path(run_dir) / "eval.json").read_text())["probes"])


def headline(p: dict) -> dict:
    """The numbers the experiments compare, flattened: fine-tuned values and changes from the base."""
    out = {}
    if "task" in p:
        t = p["task"]
        out.update(key_fact_recall=t["key_fact_recall"]["finetuned"], key_fact_recall_base=t["key_fact_recall"]["base"],
                   test_ppl=t["perplexity"]["finetuned"], rouge_l=t["rouge_l"]["finetuned"])
    if "forgetting" in p:
        f = p["forgetting"]
        out.update(reference_ppl_change=f["reference_ppl_relative_change"]["value"],
                   reference_ppl_change_ci=f["reference_ppl_relative_change"]["ci"],
                   general_accuracy=f["general_accuracy"]["finetuned"], general_accuracy_base=f["general_accuracy"]["base"],
                   general_accuracy_change=f["general_accuracy"]["delta"])
    if "memorization" in p:
        m = p["memorization"]
        out.update(memorized_rate=m["memorized_rate"]["finetuned"], verbatim_rate=m["verbatim_rate"]["finetuned"],
                   loss_gap=m["loss_gap"]["finetuned"] if isinstance(m["loss_gap"], dict) else m["loss_gap"])
    if "robustness" in p:
        per = p["robustness"]["perturbations"]
        out.update(perturbed_quality=statistics.mean(v["perturbed"]["finetuned"] for v in per.values()),
                   rephrased_quality=per["rephrasings"]["perturbed"]["finetuned"] if "rephrasings" in per else None,
                   robustness_drop=statistics.mean(v["drop"]["finetuned"] for v in per.values()))
    return out


# --- rows, aggregation, files ----------------------------------------------------------------------

class Rows:
    """One JSON line per (arm, seed) in ``results/<name>.jsonl``: done rows are skipped on a re-run."""

    def __init__(self, name: str):
        self.path = RESULTS / f"{name}.jsonl"
        self.rows = [json.loads(x) for x in self.path.read_text().splitlines()] if self.path.exists() else []

    def done(self, arm: str, seed: int) -> bool:
        """Whether the row exists, re-reading the file: another process may have added it."""
        if self.path.exists():
            self.rows = [json.loads(x) for x in self.path.read_text().splitlines()]
        return any(r["arm"] == arm and r["seed"] == seed for r in self.rows)

    def claim(self, arm: str, seed: int) -> bool:
        """Take (arm, seed) for this process, so parallel processes of one experiment split the arms.

        A claim whose process is gone (killed run) is taken over; the run then resumes from its checkpoint.
        """
        folder = WORK / ".claims" / self.path.stem
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{arm.replace(' ', '_').replace('/', '_')}-s{seed}"
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(path.read_text() or 0)
                    os.kill(pid, 0)  # alive: someone else runs it
                    return pid == os.getpid()
                except (ProcessLookupError, ValueError):
                    path.unlink(missing_ok=True)  # stale: take it over
                    continue
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            return True
        return False

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:  # one whole line per write: a killed run loses at most the current arm
            f.write(json.dumps(row) + "\n")


def mean_std(values) -> dict | None:
    vals = [v for v in values if isinstance(v, (int, float))]
    if not vals:
        return None
    return {"mean": statistics.mean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None, "n": len(vals)}


def aggregate(rows: list[dict], metrics: list[str]) -> dict:
    """Per arm: mean ± std over seeds of each metric."""
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    return {arm: {m: mean_std(r.get(m) for r in rows if r["arm"] == arm) for m in metrics} for arm in arms}


def fmt(cell: dict | None, pct: bool = False, digits: int = 2) -> str:
    if not cell:
        return "–"
    scale, unit = (100, "%") if pct else (1, "")
    s = f"{cell['mean'] * scale:.{digits}f}{unit}"
    return s + (f" ± {cell['std'] * scale:.{digits}f}" if cell.get("std") is not None else "")


def write_result(name: str, payload: dict) -> Path:
    path = RESULTS / f"{name}.json"
    atomic_text(path, json.dumps({"experiment": name, "machine": machine(), **payload}, indent=1))
    return path


def atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def experiment_main(doc: str, name: str, arms, run_arm, summarize, setup=None) -> None:
    """The command line every experiment shares: run the missing (seed, arm) rows, then summarize.

    ``run_arm(arm, seed, train_file) -> row``; ``summarize(rows, args)`` writes the table, JSON and plot.
    ``setup`` patches what the experiment measures (base-model results are shared across arms by
    ``smalltune.evaluate`` itself).
    """
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-size", type=int, default=100, help="demo training examples used (stratified subset)")
    p.add_argument("--arms", nargs="+", default=None, choices=list(arms), metavar="ARM", help="subset of arms")
    p.add_argument("--summarize", action="store_true", help="only rebuild the table, JSON and plot from saved rows")
    args = p.parse_args()
    rows = Rows(name)
    if not args.summarize:
        if setup:
            setup()
        train_file = demo_subset(args.train_size)
        for seed in args.seeds:
            for arm in args.arms or arms:
                if not rows.done(arm, seed) and rows.claim(arm, seed):
                    rows.add(run_arm(arm, seed, train_file))
                    print(json.dumps({k: v for k, v in rows.rows[-1].items() if not isinstance(v, (list, dict))}), flush=True)
    summarize(rows, args)


def command(name: str, rows: "Rows", args) -> str:
    seeds = " ".join(map(str, sorted({r["seed"] for r in rows.rows})))
    return f"python benchmarks/{name}.py --seeds {seeds} --train-size {args.train_size}"
