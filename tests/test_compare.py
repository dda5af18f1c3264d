"""`smalltune compare`: runs side by side from hand-written result files (the contracts of train and evaluate)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from smalltune.cli import main
from smalltune.use.compare import build, compare, compare_markdown

EVIL = '<script>alert("x")</script>'
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_compare.py"


def m(base, tuned, ci=None, n=20) -> dict:
    return {"base": base, "finetuned": tuned, "delta": round(tuned - base, 6), "ci": ci or [None, None], "n": n}


def write_run(path: Path, lr: float, score: float | None = None, forget: float | None = None, memorized: float = 0.0,
              method: str = "lora", summary: bool = True, name: str | None = None, rouge_only: bool = False,
              evaluated_in: str | None = None) -> Path:
    """A run directory by hand: recipe, training summary, and (when ``score`` is given) eval.json."""
    path.mkdir(parents=True)
    recipe = {"name": name or path.name, "output_dir": str(path), "model": {"name": "tiny"},
              "data": {"train": "train.jsonl", "max_length": 128}, "method": {"name": method, "r": 8},
              "train": {"lr": lr, "epochs": 3, "seed": 0}}
    (path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    if summary:
        (path / "train_summary.json").write_text(json.dumps({
            "stopped": "early_stopping", "steps": 12, "best_step": 9, "best_metrics": {"eval_loss": 1.25}}))
    if score is not None:
        task = {"rouge_l": m(0.2, score, [score - 0.3, score - 0.1]), "token_accuracy": m(0.3, score + 0.1)}
        if not rouge_only:
            task["key_fact_recall"] = m(0.1, score, [score - 0.2, score + 0.05])
        probes = {"task": task,
                  "forgetting": {"reference_ppl": m(20.0, 20.0 * (1 + forget)),
                                 "reference_ppl_relative_change": {"value": forget, "ci": [forget - 0.02, forget + 0.03], "n": 30},
                                 "general_accuracy": m(0.5, 0.45, [-0.1, 0.0])},
                  "memorization": {"memorized_rate": m(0.0, memorized, [0.0, memorized])}}
        settings = {"generation": {"precision": evaluated_in}} if evaluated_in else {}
        (path / "eval.json").write_text(json.dumps({"provenance": {}, "settings": settings, "probes": probes,
                                                    "verdicts": [], "samples": []}))
    return path


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    return [write_run(tmp_path / "fast", 1e-3, score=0.6, forget=0.05, memorized=0.5),
            write_run(tmp_path / "gentle", 1e-4, score=0.5, forget=0.02),
            write_run(tmp_path / "dominated", 3e-3, score=0.4, forget=0.10, memorized=1.0),
            write_run(tmp_path / "unevaluated", 2e-4),
            write_run(tmp_path / "crashed", 5e-4, summary=False, name=EVIL)]


def sections(html: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="([a-z]+)" data-section="\1">(.*?)</section>', html, flags=re.S))


def rows(html: str) -> dict[str, str]:
    """Run label -> its table row."""
    body = sections(html)["runs"]
    return {re.search(r"<strong title=[^>]*>(.*?)</strong>", r).group(1): r
            for r in re.findall(r"<tr(?: class=\"on-front\")?>.*?</tr>", body, re.S) if "<strong title=" in r}


def test_page_plots_runs_marks_the_front_and_survives_missing_results(runs, tmp_path):
    page = compare(runs, output=tmp_path / "out" / "compare.html")
    html = page.read_text()
    found = sections(html)
    assert list(found) == ["plane", "runs", "settings"]
    assert re.findall(r'<svg class="plot" data-plot="([a-z-]+)"', html) == ["learning-vs-forgetting"]
    by_run = rows(html)
    assert set(by_run) == {"fast", "gentle", "dominated", "unevaluated", EVIL.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;")}
    # "dominated" learned less and forgot more than "fast": off the front; the other two trade off.
    assert [k for k, r in by_run.items() if 'class="on-front"' in r] == ["fast", "gentle"]
    assert "train.lr: <strong>0.001</strong>" in by_run["fast"] and "method.r" not in found["runs"]  # only what differs
    cell = '<td class="num"><strong>{}</strong><div class="facts">{}</div></td>'.format
    assert cell("0.6", "+0.5 [+0.4, +0.65]") in by_run["fast"]  # fine-tuned, then change [CI of the change]
    assert cell("+5.0%", "[+3.0%, +8.0%]") in by_run["fast"] and cell("50%", "+50.0% [+0.0%, +50.0%]") in by_run["fast"]
    assert "not evaluated</strong>: training 12 steps, stopped by early_stopping; best validation loss 1.25" in by_run["unevaluated"]
    assert "training not finished" in html and "no train_summary.json" in html
    assert "Not on the plot: unevaluated" in found["plane"]
    assert "method.r" in found["settings"]  # shared settings listed apart
    # Self-contained and escaped, in the report's style.
    assert "<script" not in html and not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', html)
    from smalltune.use.compare_page import report_css

    assert len(report_css()) > 500 and report_css() in html


def test_markdown_table(runs, capsys):
    assert main(["compare", *map(str, runs), "--md"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| run | train.lr | status | key_fact_recall (change [95% CI]) |")
    table = {line.split(" | ")[0][2:]: line for line in lines[2:]}
    assert table["fast"].endswith("| ★ |") and table["gentle"].endswith("| ★ |") and not table["dominated"].endswith("★ |")
    assert "| 0.6 (+0.5 [+0.4, +0.65]) | +5.0% [+3.0%, +8.0%] | 45% (-5.0% [-10.0%, +0.0%]) | 50% (+50.0% [+0.0%, +50.0%]) | ★ |" in table["fast"]
    assert "| not evaluated: 12 steps, stopped by early_stopping; best validation loss 1.25 |" in table["unevaluated"]
    assert len(lines) == 2 + 5


def test_runs_evaluated_in_different_precisions_show_it_among_their_differences(tmp_path):
    """``eval.precision: auto`` follows each run's training, so two runs of one recipe can be evaluated in fp32 and
    bf16: the page lists the precision each evaluation used as a difference, never as a shared setting."""
    mixed = build([write_run(tmp_path / "a", 1e-4, score=0.5, forget=0.02, evaluated_in="fp32"),
                   write_run(tmp_path / "b", 1e-4, score=0.5, forget=0.02, evaluated_in="bf16")])
    assert mixed.keys == ["eval.precision"]
    assert [r.differences["eval.precision"] for r in mixed.rows] == ["fp32", "bf16"]
    same = build([write_run(tmp_path / "c", 1e-4, score=0.5, forget=0.02, evaluated_in="bf16"),
                  write_run(tmp_path / "d", 1e-3, score=0.5, forget=0.02, evaluated_in="bf16")])
    assert same.keys == ["train.lr"] and same.common["eval.precision"] == "bf16"


def test_study_folder_stands_for_its_trials_in_order(tmp_path):
    study = tmp_path / "study"
    for i, score in ((10, 0.3), (2, 0.5), (1, 0.4)):
        write_run(study / "trials" / str(i), 1e-4 * i, score=score, forget=0.01 * i)
    (study / "trials" / "notes").mkdir()  # not a run: ignored
    single = write_run(tmp_path / "single", 1e-3, score=0.45, forget=0.05)
    c = build([study, single, study / "trials" / "2"])  # a run named twice counts once
    assert [r.label for r in c.rows] == ["1", "2", "10", "single"]
    assert [r.label for r in c.rows if r.on_front] == ["1", "2"]  # 10 and single forget more for less


def test_inputs_that_are_not_runs_fail_with_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty")]) == 2
    assert "is not a run directory (no recipe.yaml, eval.json, ...) and holds no trials/*/ run directories" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "missing: does not exist" in capsys.readouterr().err


def test_metric_falls_back_and_can_be_chosen(tmp_path, capsys):
    a = write_run(tmp_path / "a", 1e-3, score=0.6, forget=0.05)
    b = write_run(tmp_path / "b", 1e-4, score=0.5, forget=0.02, rouge_only=True)  # a test set without key facts
    assert build([a, b]).metric == "rouge_l"
    c = build([a, b], metric="token_accuracy")
    assert [r.task["finetuned"] for r in c.rows] == [0.7, 0.6]
    assert main(["compare", str(a), "--metric", "bleu", "--md"]) == 2
    assert "--metric bleu: no run's eval.json has task.bleu; available: key_fact_recall, rouge_l, token_accuracy" in capsys.readouterr().err


def test_nothing_evaluated_still_gives_a_page(tmp_path):
    html = compare([write_run(tmp_path / "a", 1e-3), write_run(tmp_path / "b", 1e-4)], output=tmp_path / "c.html").read_text()
    assert "nothing to plot" in sections(html)["plane"] and "<svg" not in html
    assert html.count("not evaluated</strong>") == 2
    assert "| a | 0.001 | not evaluated: 12 steps" in compare_markdown([tmp_path / "a", tmp_path / "b"])


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium package")
def test_page_renders_in_headless_chromium(runs, tmp_path):
    page = compare(runs, output=tmp_path / "compare.html")
    shot = tmp_path / "shot.png"
    result = subprocess.run([sys.executable, str(SCRIPT), str(page), "--screenshot", str(shot)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 inline plots" in result.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
