#!/usr/bin/env python3
"""Check the Brightside Dental demo dataset in examples/dental/.

Usage:
    .venv/bin/python scripts/check_demo_data.py [DATA_DIR]

Checks (any failure makes the script exit with status 1):
  * every line of train/validation/test .jsonl parses as a JSON object;
  * required fields and their shapes (id, category, messages; for test also
    key_facts and rephrasings); messages alternate user/assistant, start with
    the user, end with the assistant, and contain no system messages;
  * ids are unique, follow <prefix>-NNNN, and categories are the known eight;
  * per-category and total counts reach the minimums;
  * every test question (and each rephrasing) has a rapidfuzz fuzz.ratio
    below 80, on lowercased text, against every train and validation user
    turn (the worst pairs are printed);
  * every key_fact appears (case-insensitively) in its test reference answer
    and is taught by at least one train answer;
  * no exact duplicate questions between files (or first questions within one);
  * canonical spellings: times like "8 am" / "7:30 pm", "Dr." with a period,
    and only the phone numbers listed in facts.md.

Warnings (printed, not fatal): answers longer than 60 words or 3 sentences,
and dollar amounts that do not appear in facts.md.
"""
from __future__ import annotations

import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

from rapidfuzz import fuzz

CATEGORIES = ["hours", "booking", "prices", "insurance", "emergencies", "location", "services", "policies"]
SPLITS = {
    # file name: (id prefix, min per category, min total)
    "train.jsonl": ("train", 30, 320),
    "validation.jsonl": ("val", 6, 48),
    "test.jsonl": ("test", 8, 64),
}
FUZZ_THRESHOLD = 80
MAX_WORDS = 60
MAX_SENTENCES = 3

failures: list[str] = []
warnings: list[str] = []


def fail(msg: str) -> None:
    failures.append(msg)


def warn(msg: str) -> None:
    warnings.append(msg)


def norm_q(text: str) -> str:
    """Normalisation for the exact-duplicate check: case, spacing, end punctuation."""
    return re.sub(r"\s+", " ", text.casefold()).strip().strip("?!.,;: ")


def load(path: Path) -> list[dict]:
    rows = []
    if not path.exists():
        fail(f"{path.name}: file is missing")
        return rows
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                fail(f"{path.name}:{n}: blank line")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                fail(f"{path.name}:{n}: invalid JSON ({e})")
                continue
            if not isinstance(obj, dict):
                fail(f"{path.name}:{n}: line is not a JSON object")
                continue
            obj["_where"] = f"{path.name}:{n}"
            rows.append(obj)
    return rows


def nonempty_str(x) -> bool:
    return isinstance(x, str) and x.strip() != ""


def check_row(row: dict, prefix: str, is_test: bool) -> bool:
    where = row["_where"]
    ok = True
    allowed = {"id", "category", "messages", "_where"} | ({"key_facts", "rephrasings"} if is_test else set())
    for key in row:
        if key not in allowed:
            fail(f"{where}: unexpected field {key!r}")
            ok = False
    rid = row.get("id")
    if not nonempty_str(rid) or not re.fullmatch(rf"{prefix}-\d{{4}}", rid):
        fail(f"{where}: id {rid!r} does not match {prefix}-NNNN")
        ok = False
    if row.get("category") not in CATEGORIES:
        fail(f"{where}: unknown category {row.get('category')!r}")
        ok = False
    msgs = row.get("messages")
    if not isinstance(msgs, list) or len(msgs) < 2 or len(msgs) % 2:
        fail(f"{where}: messages must be a list of user/assistant pairs")
        return False
    for i, m in enumerate(msgs):
        want = "user" if i % 2 == 0 else "assistant"
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            fail(f"{where}: message {i} must have exactly 'role' and 'content'")
            ok = False
            continue
        if m["role"] != want:
            fail(f"{where}: message {i} has role {m['role']!r}, expected {want!r}")
            ok = False
        if not nonempty_str(m["content"]):
            fail(f"{where}: message {i} has empty content")
            ok = False
    if is_test:
        if len(msgs) != 2:
            fail(f"{where}: test examples must be single-turn")
            ok = False
        kf = row.get("key_facts")
        if not isinstance(kf, list) or not 1 <= len(kf) <= 3 or not all(nonempty_str(k) for k in kf):
            fail(f"{where}: key_facts must be a list of 1-3 non-empty strings")
            ok = False
        rp = row.get("rephrasings")
        if not isinstance(rp, list) or len(rp) != 2 or not all(nonempty_str(r) for r in rp):
            fail(f"{where}: rephrasings must be a list of exactly 2 non-empty strings")
            ok = False
        elif ok and any(norm_q(r) == norm_q(msgs[0]["content"]) for r in rp):
            fail(f"{where}: a rephrasing repeats the question")
            ok = False
    return ok


def user_turns(row: dict) -> list[str]:
    return [m["content"] for m in row["messages"] if m["role"] == "user"]


def assistant_turns(row: dict) -> list[str]:
    return [m["content"] for m in row["messages"] if m["role"] == "assistant"]


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    data_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "examples" / "dental"
    facts_path = data_dir / "facts.md"
    facts_text = facts_path.read_text(encoding="utf-8") if facts_path.exists() else ""
    if not facts_text:
        fail("facts.md: file is missing or empty")

    data: dict[str, list[dict]] = {}
    for fname, (prefix, _, _) in SPLITS.items():
        rows = load(data_dir / fname)
        data[fname] = [r for r in rows if check_row(r, prefix, fname == "test.jsonl")]
        if len(data[fname]) != len(rows):
            fail(f"{fname}: {len(rows) - len(data[fname])} malformed example(s) left out of later checks")

    # ids unique across all files
    ids = Counter(r["id"] for rows in data.values() for r in rows)
    for rid, n in ids.items():
        if n > 1:
            fail(f"id {rid} is used {n} times")

    # category counts
    print("Counts per category:")
    print(f"  {'category':<12}" + "".join(f"{f.split('.')[0]:>12}" for f in SPLITS))
    counts = {f: Counter(r["category"] for r in rows) for f, rows in data.items()}
    for c in CATEGORIES:
        print(f"  {c:<12}" + "".join(f"{counts[f][c]:>12}" for f in SPLITS))
    print(f"  {'TOTAL':<12}" + "".join(f"{len(data[f]):>12}" for f in SPLITS))
    multi = sum(1 for r in data["train.jsonl"] if len(r["messages"]) > 2)
    print(f"  multi-turn train examples: {multi}")
    for fname, (_, min_cat, min_total) in SPLITS.items():
        for c in CATEGORIES:
            if counts[fname][c] < min_cat:
                fail(f"{fname}: category {c} has {counts[fname][c]} examples (< {min_cat})")
        if len(data[fname]) < min_total:
            fail(f"{fname}: {len(data[fname])} examples (< {min_total})")

    train, val, test = data["train.jsonl"], data["validation.jsonl"], data["test.jsonl"]

    # test questions vs train/validation user turns
    seen = [(u, r["id"]) for r in train + val for u in user_turns(r)]
    seen_lower = [u.lower() for u, _ in seen]

    def best_match(text: str) -> tuple[float, str, str]:
        best = (-1.0, "", "")
        t = text.lower()
        for (u, rid), ul in zip(seen, seen_lower):
            s = fuzz.ratio(t, ul)
            if s > best[0]:
                best = (s, u, rid)
        return best

    q_pairs, r_pairs = [], []
    for r in test:
        q = r["messages"][0]["content"]
        s, u, rid = best_match(q)
        q_pairs.append((s, r["id"], q, rid, u))
        for reph in r["rephrasings"]:
            s, u, rid = best_match(reph)
            r_pairs.append((s, r["id"], reph, rid, u))
    for label, pairs in (("test questions", q_pairs), ("test rephrasings", r_pairs)):
        pairs.sort(reverse=True)
        print(f"\nWorst 5 {label} vs train/validation user turns (fuzz.ratio, lowercased; must be < {FUZZ_THRESHOLD}):")
        for s, tid, t, rid, u in pairs[:5]:
            print(f"  {s:5.1f}  {tid}: {t!r}\n         {rid}: {u!r}")
        for s, tid, t, rid, u in pairs:
            if s >= FUZZ_THRESHOLD:
                fail(f"{tid}: {label[5:-1]} {t!r} is too close to {rid} {u!r} (fuzz.ratio {s:.1f})")

    # key facts
    train_answers = " \n".join(a.casefold() for r in train for a in assistant_turns(r))
    for r in test:
        ref = r["messages"][1]["content"].casefold()
        for k in r["key_facts"]:
            if k.casefold() not in ref:
                fail(f"{r['id']}: key fact {k!r} not in the reference answer")
            if k.casefold() not in train_answers:
                fail(f"{r['id']}: key fact {k!r} never appears in a train answer")

    # exact duplicate questions
    where_q: dict[str, set[str]] = defaultdict(set)
    for fname, rows in data.items():
        firsts = Counter()
        for r in rows:
            qs = user_turns(r) + (r["rephrasings"] if fname == "test.jsonl" else [])
            for q in qs:
                where_q[norm_q(q)].add(fname)
            firsts[norm_q(user_turns(r)[0])] += 1
        for q, n in firsts.items():
            if n > 1:
                fail(f"{fname}: question {q!r} appears {n} times")
    for q, files in where_q.items():
        if len(files) > 1:
            fail(f"question {q!r} appears in {', '.join(sorted(files))}")

    # canonical spellings and consistency with facts.md
    fact_phones = set(re.findall(r"\b555-\d{4}\b", facts_text))
    fact_money = set(re.findall(r"\$[\d,]*\d", facts_text))
    bad_time = re.compile(r"\b\d{1,2}(?::\d{2})?(?:am|pm)\b|\b\d{1,2}(?::\d{2})?\s?(?:AM|PM|A\.M\.|P\.M\.|a\.m\.|p\.m\.)|\b\d{1,2}:00\b")
    for fname, rows in data.items():
        for r in rows:
            for a in assistant_turns(r):
                if m := bad_time.search(a):
                    fail(f"{r['id']}: non-canonical time {m.group(0)!r} (use e.g. '8 am', '7:30 pm')")
                if m := re.search(r"\bDr\b(?!\.)", a):
                    fail(f"{r['id']}: write 'Dr.' with a period")
                for p in re.findall(r"\b555-\d{4}\b", a):
                    if p not in fact_phones:
                        fail(f"{r['id']}: phone number {p} is not in facts.md")
                for d in re.findall(r"\$[\d,]*\d", a):
                    if d not in fact_money:
                        warn(f"{r['id']}: amount {d} is not in facts.md (check the arithmetic)")
                words = len(a.split())
                sentences = len(re.findall(r"[.!?](?:\s|$)", re.sub(r"\bDr\. ", "Dr ", a)))
                if words > MAX_WORDS or sentences > MAX_SENTENCES:
                    warn(f"{r['id']}: long answer ({words} words, {sentences} sentences)")

    if warnings:
        print(f"\n{len(warnings)} warning(s):")
        for w in warnings:
            print(f"  WARN {w}")
    if failures:
        print(f"\n{len(failures)} failure(s):")
        for f_ in failures:
            print(f"  FAIL {f_}")
        return 1
    print("\nAll checks passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
