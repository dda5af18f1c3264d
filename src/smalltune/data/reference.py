"""General-knowledge reference data for measuring and limiting forgetting.

Three sources ship inside PyPI packages we install as data only (never imported):

* 104 English Wikipedia articles in the ``gensim`` wheel's test data (CC BY-SA), cleaned into
  plain paragraphs once and cached as JSON: the text for reference perplexity.
* ``questions-words.txt`` from the same wheel: country -> capital pairs, a factual probe.
* ``chatterbot-corpus`` (BSD-3) English YAML files: general question/answer pairs.

The capitals and the trivia are **measurement-only**: :func:`general_questions` joins them into the
general-question pool that forgetting is measured on, so nothing may train or replay on them
(general replay uses ``data/general_prompts.txt`` instead, see ``data/self_replay.py``). Of the other
chatterbot English files only ``trivia.yml`` holds short checkable facts; the rest are a chatbot's
persona and opinions ("Are you sentient?" -> "Sort of."), so they are not used.

The wikitext cleaner below is hand-written because the maintained extractor (gensim's
``WikiCorpus``) needs gensim's compiled stack; a short regex pass is enough to get prose.
"""

from __future__ import annotations

import bz2
import html
import importlib.util
import json
import random
import re
from pathlib import Path

import yaml

from ..errors import SmalltuneError

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
CAPITAL_SECTIONS = (": capital-common-countries", ": capital-world")


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)  # locate only; importing gensim would need scipy
    if spec is None or not spec.submodule_search_locations:
        raise SmalltuneError(f"reference data needs the '{package}' package: pip install --no-deps {package.replace('_', '-')}")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    if not path.exists():
        raise SmalltuneError(f"reference data file missing: {path}")
    return path


_MARKUP = [
    (re.compile(r"<!--.*?-->", re.S), ""),
    (re.compile(r"<ref[^>]*/>"), ""),
    (re.compile(r"<ref.*?</ref>", re.S), ""),
    (re.compile(r"<[^>]+>"), ""),
    (re.compile(r"\[\[(?:File|Image|Category):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", re.I), ""),
    (re.compile(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]"), r"\1"),
    (re.compile(r"\[https?://\S+ ([^\]]*)\]"), r"\1"),
    (re.compile(r"\[https?://\S+\]"), ""),
    (re.compile(r"'{2,}"), ""),
]


def _strip_templates(text: str) -> str:
    """Remove {{...}} and {|...|} blocks, which nest."""
    out, depth, i = [], 0, 0
    while i < len(text):
        two = text[i: i + 2]
        if two in ("{{", "{|"):
            depth += 1
            i += 2
        elif two in ("}}", "|}") and depth:
            depth -= 1
            i += 2
        else:
            if not depth:
                out.append(text[i])
            i += 1
    return "".join(out)


def clean_wikitext(text: str) -> list[str]:
    """Plain-prose paragraphs of one article (headings, lists, tables and references dropped)."""
    text = _strip_templates(html.unescape(text))
    for pattern, repl in _MARKUP:
        text = pattern.sub(repl, text)
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.splitlines()
                 if ln.strip() and not ln.lstrip().startswith(("=", "*", "#", "|", "!", ":", ";", "{", "}"))]
        para = re.sub(r"\s+", " ", " ".join(lines)).strip()
        para = re.sub(r"\(\s*[,;]?\s*\)", "", para).replace(" ,", ",").replace(" .", ".")
        if para:
            paragraphs.append(para)
    return paragraphs


def reference_paragraphs(min_chars: int = 200) -> list[str]:
    """Cleaned Wikipedia paragraphs (cached after the first call), in article order."""
    from ..models import cache_dir

    cache = cache_dir() / "reference" / "enwiki_paragraphs.json"
    if cache.exists():
        paragraphs = json.loads(cache.read_text(encoding="utf-8"))
    else:
        raw = bz2.open(_package_file("gensim", "test", "test_data", WIKI_FILE)).read().decode("utf-8")
        paragraphs = []
        for page in re.findall(r"<page>(.*?)</page>", raw, re.S):
            if "<ns>0</ns>" not in page:
                continue
            m = re.search(r"<text[^>]*>(.*?)</text>", page, re.S)
            if m and not m.group(1).lstrip().upper().startswith("#REDIRECT"):
                paragraphs.extend(clean_wikitext(m.group(1)))
        from ..rundir import atomic_write_json

        atomic_write_json(cache, paragraphs)
    return [p for p in paragraphs if len(p) >= min_chars]


def reference_sample(n: int = 24, seed: int = 0, min_chars: int = 300) -> list[str]:
    """A small fixed sample of paragraphs (cheap enough to score at every evaluation)."""
    paragraphs = reference_paragraphs(min_chars)
    return random.Random(seed).sample(paragraphs, min(n, len(paragraphs)))


def load_reference_file(path: str | Path) -> list[str]:
    """A user's reference text: .txt (paragraphs separated by blank lines) or .jsonl with a "text" field."""
    path = Path(path)
    if not path.is_file():
        raise SmalltuneError(f"{path}: reference file not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".jsonl":
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line)["text"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise SmalltuneError(f"{path}:{n}: expected a JSON object with a \"text\" field") from None
        return out
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def capital_pairs() -> list[tuple[str, str]]:
    """Unique (country, capital) pairs from gensim's ``questions-words.txt``."""
    path = _package_file("gensim", "test", "test_data", "questions-words.txt")
    pairs: dict[str, str] = {}
    section = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(":"):
            section = line.strip()
            continue
        if section in CAPITAL_SECTIONS:
            a, b, c, d = line.split()
            pairs.setdefault(b, a)
            pairs.setdefault(d, c)
    return sorted(pairs.items())


def general_qa(files: tuple[str, ...] = ("trivia.yml",)) -> list[tuple[str, str]]:
    """Unique (question, answer) pairs from chatterbot-corpus English files."""
    base = _package_file("chatterbot_corpus", "data", "english")
    seen: dict[str, str] = {}
    for name in files:
        data = yaml.safe_load((base / name).read_text(encoding="utf-8")) or {}
        for conv in data.get("conversations", []):
            if isinstance(conv, list) and len(conv) >= 2 and all(isinstance(x, str) for x in conv[:2]):
                seen.setdefault(conv[0].strip(), conv[1].strip())
    return list(seen.items())


# Trivia items left out of the question pool, with the reason: a wrong or disputed answer, a record that
# is not a question, an answer that changes over time, or an answer too long for the short-answer rule.
TRIVIA_EXCLUDED = {
    "Dolphins use a sense, similar to sonar, to determine the location and shape of nearby items.": "not a question",
    "What is the Twitter bird’s official?": "not a question (words missing)",
    "What is the rarest M&M color?": "disputed",
    "Samuel Tilden, Grover Cleveland, Al Gore and Hillary Clinton share what distinction among U.S. "
    "presidential candidates?": "a sentence, not a short answer",
    "What is often seen as the smallest unit of memory?": "wrong (the bit, not the kilobyte)",
    "Which mammal has no vocal cords?": "disputed (giraffes have a larynx)",
    "What type of music has been shown to help plants grow better and faster?": "disputed",
    "Power outages in the US are mostly caused by what?": "disputed",
    "When did the Cold War end?": "disputed (1989 or 1991)",
    "Who invented scissors?": "wrong (scissors are ancient)",
    "The Eiffel Tower was originally intended for what city?": "disputed",
    "Which Doors song is about Jim Morrison’s relationship with Pamela Courson?": "several songs are",
    "Which country has a red flag with a star in the middle?": "ambiguous (Morocco, Vietnam)",
    "What is the biggest supermarket chain in the U.S.?": "changes over time",
    "On every continent there is a city named what?": "disputed",
    "What is the name of Jordan’s capital city?": "repeats a capitals question",
}

# Further accepted answers where the file's answer is misspelled, or a number may be written either way.
TRIVIA_ALSO_ACCEPTED = {
    "How many of Snow White’s seven dwarfs have names ending in the letter Y?": ("Five", "5"),
    "How many ribs are in a human body?": ("24", "twenty-four"),
    "When Michael Jordan played for the Chicago Bulls, how many NBA Championships did he win?": ("6",),
    "How many hearts does an octopus have?": ("3",),
    "How many eyes does a bee have?": ("5",),
    "How many children does Oprah Winfrey have?": ("0", "none"),
    "How many signs are there in the Zodiac?": ("twelve",),
    "How many red stripes are there on the American flag?": ("7",),
    "New York City comprises how many boroughs?": ("five",),
    "How many sides does the home plate in baseball have?": ("five",),
    "Water as a pH level of around?": ("seven",),
    "Which bone are babies born without?": ("kneecap", "kneecaps", "patella"),
    "What is the driest continent?": ("Antarctica",),
    "What is the most abundant metal in the Earth’s crust?": ("Aluminum",),
    "Who voices Morty in the series “Rick and Morty”?": ("Justin Roiland",),
    "What celebrity has their dog cloned– twice?": ("Barbra Streisand",),
    "The male of what species testicles explode on mating and then dies?": ("honey bee",),
}

# "What is the capital of the Bahamas?", not "of Bahamas?"; the others accept a second spelling.
_WITH_THE = {"Bahamas", "Gambia", "Philippines"}
CAPITAL_ALSO_ACCEPTED = {"Kiev": ("Kyiv",), "Chisinau": ("Chișinău",)}


def general_questions() -> list[tuple[str, str, tuple[str, ...]]]:
    """The general-question pool forgetting is measured on: ``(kind, question, accepted answers)``.

    ``kind`` is "capital" (gensim's country -> capital pairs) or "trivia" (chatterbot-corpus
    ``trivia.yml`` without :data:`TRIVIA_EXCLUDED`); the first accepted answer is the file's own.
    Measurement only: never train or replay on these.

    >>> len(general_questions()) >= 200
    True
    """
    out = [("capital", f"What is the capital of {'the ' * (c in _WITH_THE)}{c}?",
            (cap, *CAPITAL_ALSO_ACCEPTED.get(cap, ()))) for c, cap in capital_pairs()]
    out += [("trivia", q, (a, *TRIVIA_ALSO_ACCEPTED.get(q, ()))) for q, a in general_qa() if q not in TRIVIA_EXCLUDED]
    return out
