"""`smalltune chat`: streamed answers equal greedy generation, /base really is the base model, history
stays inside the context, and one-shot answers come out as JSON lines."""

from __future__ import annotations

import io
import json
import re

import pytest

from conftest import toy_records, write_jsonl
from smalltune.cli import main
from smalltune.generate import GenerationSettings, generate

SYSTEM = "You answer for the Brightside clinic."
Q = "When are you open?"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """Train one tiny run per method on demand (a high learning rate so the model visibly changes)."""
    from smalltune import train
    from smalltune.recipe import recipe_from_dict

    runs = {}

    def get(method: str):
        if method not in runs:
            tmp = tmp_path_factory.mktemp(f"chat-{method}")
            data = write_jsonl(tmp / "train.jsonl", toy_records())
            recipe = recipe_from_dict({
                "model": {"name": str(tiny_model_dir)}, "method": {"name": method},
                "data": {"train": str(data), "max_length": 128, "system_prompt": SYSTEM},
                "train": {"epochs": 1, "batch_size": 4, "lr": 1e-2, "seed": 0, "max_steps": 6},
                "eval": {"every_steps": 3, "batch_size": 8}, "output_dir": str(tmp / "run")}, [])
            runs[method] = train(recipe, progress=False).run_dir
        return runs[method]

    return get


def _expected(model, tok, conversation, n=6) -> str:
    return generate(model, tok, [conversation], GenerationSettings(max_new_tokens=n))[0]


@pytest.mark.parametrize("method", ["lora", "prompt", "full"])
def test_streamed_answers_and_base_switch(trained, tiny_model_dir, method):
    from smalltune import load_trained
    from smalltune.models import load_model
    from smalltune.use.chat import repl
    from smalltune.use.session import open_session

    run = trained(method)
    session = open_session(run, max_new_tokens=6)
    out = io.StringIO()
    history = repl(session, [Q, "/base", Q], out=out)

    tuned, tok, _ = load_trained(run)
    base, _ = load_model(str(tiny_model_dir))
    first = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": Q}]
    ft_answer = _expected(tuned, tok, first)
    second = first + [{"role": "assistant", "content": ft_answer}, {"role": "user", "content": Q}]
    base_answer = _expected(base, tok, second)
    # The run's system prompt goes first; the streamed answer is exactly the greedy answer.
    assert session.fit([{"role": "user", "content": Q}])[0] == first
    assert [m["content"] for m in history] == [Q, ft_answer, Q, base_answer]
    assert f"fine-tuned> {ft_answer}" in out.getvalue().replace("\n", "")
    assert "now answering: base model" in out.getvalue()
    # /base runs the base weights (disable_adapter, or a separately loaded base): same next-token
    # logits as the plain base model, different from the fine-tuned model's.
    import torch

    ids = tok([session.render(first)], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        with session.use("base") as m:
            switched = m(**ids).logits[:, -1]
        with session.use("finetuned") as m:
            own = m(**ids).logits[:, -1]
        plain = base(**ids).logits[:, -1]
    assert torch.allclose(switched, plain, atol=1e-5) and not torch.allclose(own, plain, atol=1e-3)
    if method != "prompt":  # 6 steps of prompt tuning move the logits but not this greedy answer
        assert _expected(base, tok, first) != ft_answer


def test_compare_shows_both_answers_side_by_side(trained):
    from smalltune.use.chat import repl
    from smalltune.use.session import open_session

    session = open_session(trained("lora"), max_new_tokens=6)
    out = io.StringIO()
    history = repl(session, ["/compare", Q, "/reset", "/nonsense", "/quit", "never read"], out=out)
    text = out.getvalue()
    header = next(line for line in text.splitlines() if "fine-tuned" in line and "base model" in line)
    assert header.index("fine-tuned") < header.index("base model")  # two columns on one line
    both = {m: session.answers([session.fit([{"role": "user", "content": Q}])[0]], m)[0] for m in ("finetuned", "base")}
    cells = re.sub(r"[\s│┃┏┓┗┛┡┩└┘━─┳┻╇╈┯┷]+", "", text)
    assert both["finetuned"].replace(" ", "") in cells and both["finetuned"] != both["base"]
    assert history == []  # /reset forgot the exchange; /quit stopped before "never read"
    assert "unknown command /nonsense" in text


def test_history_stays_inside_the_context(trained):
    from smalltune.use.chat import repl
    from smalltune.use.session import open_session

    session = open_session(trained("lora"), max_new_tokens=8, context=120)
    long = "Tell me about the clinic opening hours and the prices please. " * 2
    out = io.StringIO()
    history = repl(session, [long, long, long, "word " * 200, "short question"], out=out)
    text = out.getvalue()
    assert "oldest messages to stay within the 120-token context" in text
    assert "the message takes" in text and "shorten it" in text  # the too-long message: a message, not a crash
    assert history[-2]["content"] == "short question" and history[0]["role"] == "user"
    assert len(history) < 8  # 4 answered exchanges would be 8 messages
    kept, dropped = session.fit(history[:-1])
    assert dropped == 0 and session.n_tokens(session.render(kept)) <= 120 - 8


def test_one_shot_prints_json_lines(trained, tmp_path, capsys):
    from smalltune.use.session import open_session

    run = trained("lora")
    prompts = write_jsonl(tmp_path / "test.jsonl", [
        {"id": "t1", "messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": "9 to 5"}]},
        "Where is the clinic?",
        {"instruction": "Give the price", "input": "of a checkup", "output": "$80"},
    ])
    code = main(["chat", str(run), "--prompt", "Hello", "--prompts", str(prompts), "--compare", "--max-new-tokens", "6"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and len(rows) == 4
    assert [r["prompt"] for r in rows] == ["Hello", Q, "Where is the clinic?", "Give the price\n\nof a checkup"]
    assert rows[1]["id"] == "t1" and rows[1]["reference"] == "9 to 5" and rows[3]["reference"] == "$80"
    session = open_session(run, max_new_tokens=6)
    expected = session.answers([session.fit([{"role": "user", "content": Q}])[0]], "finetuned")[0]
    assert rows[1]["finetuned"] == expected and "base" in rows[1]


def test_bad_prompts_file_names_the_line(trained, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"fine"\n{"question": "no known field"}\n')
    assert main(["chat", str(trained("lora")), "--prompts", str(bad)]) == 2
    assert f"{bad}:2: expected a string or an object with messages, prompt or instruction" in capsys.readouterr().err


def test_interactive_chat_reads_stdin(trained, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{Q}\n/help\n"))
    assert main(["chat", str(trained("lora")), "--max-new-tokens", "4"]) == 0  # ends at end of input
    out = capsys.readouterr().out
    assert "system prompt: " + SYSTEM in out and "fine-tuned> " in out and "/compare" in out


def test_not_a_run_directory_is_a_one_line_error(tmp_path, capsys):
    assert main(["chat", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
