"""Documents -> passages: markdown, plain text and HTML pages cut into short, self-contained passages.

Each reader turns a file into blocks (a heading, or a paragraph / list item / table cell of text
under the headings above it); :func:`passages` packs consecutive blocks of one section into
passages of at most ``max_words`` words, splitting an overlong block at sentence ends. A passage
is what one synthetic question is asked about and what its answer must be grounded in, so it stays
short enough for a small model's prompt and keeps the section title that gives it its topic.

Markdown is parsed with markdown-it-py (CommonMark; already installed as a dependency of rich),
HTML with the standard library's ``html.parser`` (scripts, styles, navigation and footers skipped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from ..data.readers import read_text
from ..errors import DataError, SmalltuneError
from ..registry import Registry

MAX_WORDS = 80  # per passage: a few facts, short enough for a 2k-token prompt with room to answer
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


@dataclass
class Block:
    text: str
    heading: int = 0  # 1-6 for a heading, 0 for body text


@dataclass
class Passage:
    id: str  # "<file name>#<n>", n counting from 1 within the file
    document: str  # the file it came from
    section: str  # the headings above it, "Title > Section"; "" when the document has none
    text: str

    @property
    def context(self) -> str:
        """The passage with its section title: what a question is asked about and an answer is checked against."""
        return f"{self.section}\n{self.text}" if self.section else self.text


READERS: Registry = Registry("document type")


@READERS.register("md")
def read_markdown(text: str) -> list[Block]:
    from markdown_it import MarkdownIt

    blocks, heading = [], 0
    for tok in MarkdownIt("commonmark").enable("table").parse(text):
        if tok.type == "heading_open":
            heading = int(tok.tag[1])
        elif tok.type == "heading_close":
            heading = 0
        elif tok.type == "inline":
            plain = "".join(c.content if c.type in ("text", "code_inline") else " " if "break" in c.type else ""
                            for c in tok.children or [])
            if plain.strip():
                blocks.append(Block(" ".join(plain.split()), heading))
    return blocks


@READERS.register("txt")
def read_plain(text: str) -> list[Block]:
    """Paragraphs split at blank lines; a lone short line ending in ':' (``Prices:``) is a heading."""
    blocks = []
    for para in re.split(r"\n\s*\n", text):
        lines = [x.strip() for x in para.splitlines() if x.strip()]
        if len(lines) == 1 and lines[0].endswith(":") and len(lines[0].split()) <= 8:
            blocks.append(Block(lines[0].rstrip(":"), 2))
        elif lines:
            blocks.append(Block(" ".join(" ".join(lines).split())))
    return blocks


class _HTMLBlocks(HTMLParser):
    SKIP = {"script", "style", "noscript", "template", "nav", "head", "svg", "form", "button", "footer"}
    BLOCK = {"p", "li", "td", "th", "dt", "dd", "blockquote", "pre", "div", "section", "article", "tr",
             "h1", "h2", "h3", "h4", "h5", "h6", "main", "header", "footer", "table", "ul", "ol", "caption"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self.buf: list[str] = []
        self.skipping = 0
        self.heading = 0

    def flush(self):
        text = " ".join("".join(self.buf).split())
        if text:
            self.blocks.append(Block(text, self.heading))
        self.buf = []

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skipping += 1
        elif tag == "br":  # a line break inside a paragraph, not a new block
            self.buf.append(" ")
        elif tag in self.BLOCK:
            self.flush()
            self.heading = int(tag[1]) if re.fullmatch(r"h[1-6]", tag) else self.heading

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCK:
            self.flush()
            if re.fullmatch(r"h[1-6]", tag):
                self.heading = 0

    def handle_data(self, data):
        if not self.skipping:
            self.buf.append(data)


@READERS.register("html")
def read_html(text: str) -> list[Block]:
    parser = _HTMLBlocks()
    parser.feed(text)
    parser.close()
    parser.flush()
    return parser.blocks


EXTENSIONS = {"md": "md", "markdown": "md", "txt": "txt", "text": "txt", "html": "html", "htm": "html"}


def _pieces(text: str, max_words: int) -> list[str]:
    """``text`` cut at sentence ends into pieces of at most ``max_words`` words (a longer sentence stays whole)."""
    out, cur = [], []
    for sentence in _SENTENCE.split(text):
        if cur and len(" ".join(cur + [sentence]).split()) > max_words:
            out.append(" ".join(cur))
            cur = []
        cur.append(sentence)
    return out + ([" ".join(cur)] if cur else [])


def passages(path: str | Path, max_words: int = MAX_WORDS) -> list[Passage]:
    """The passages of one document.

    >>> [p.section for p in passages("examples/dental/docs/faq.md")][:2]
    ['Brightside Dental: questions we hear every day > Opening hours', ...]
    """
    path = Path(path)
    ext = EXTENSIONS.get(path.suffix.lower().lstrip("."))
    if ext is None:
        raise DataError(path, None, f"unsupported document type '{path.suffix}'; use .md, .txt or .html")
    heads: list[tuple[int, str]] = []
    groups: list[tuple[str, list[str]]] = []  # (section, pieces) in document order
    for block in READERS.get(ext)(read_text(path)):
        if block.heading:
            heads = [h for h in heads if h[0] < block.heading] + [(block.heading, block.text)]
            continue
        section = " > ".join(t for _, t in heads)
        if not groups or groups[-1][0] != section:
            groups.append((section, []))
        groups[-1][1].extend(_pieces(block.text, max_words))
    out = []
    for section, pieces in groups:
        cur: list[str] = []
        for piece in pieces + [None]:
            if cur and (piece is None or len(" ".join(cur + [piece]).split()) > max_words):
                out.append(Passage(f"{path.name}#{len(out) + 1}", str(path), section, "\n".join(cur)))
                cur = []
            if piece is not None:
                cur.append(piece)
    return out


def read_passages(paths, max_words: int = MAX_WORDS) -> list[Passage]:
    """Passages of every document, in order; an unreadable or empty document stops with its name."""
    if max_words < 10:
        raise SmalltuneError(f"--max-words must be at least 10, got {max_words}")
    out = []
    for path in paths:
        found = passages(path, max_words)
        if not found:
            raise DataError(path, None, "no text found in this document")
        out += found
    return out
