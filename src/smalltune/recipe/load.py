"""Reading a recipe: bounded YAML parsing, type coercion, ``key=value`` overrides, validation that
collects every problem before reporting (torchtune's ``config/_validate.py`` does the same), and the
checks of the files a recipe names.

>>> r = load_recipe("recipe.yaml", overrides=["train.lr=1e-4"])
>>> r.train.lr
0.0001
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import reprlib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from ..errors import RecipeError, SmalltuneError
from .options import field_types, is_section
from .sections import Recipe

MAX_YAML_VALUES = 10_000  # values a recipe may hold once aliases are expanded (a real one has ~100)
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 2, 4, 4


def _r(value: Any, limit: int = 100) -> str:
    """repr of a user value, bounded: an error line must stay one short line whatever the value."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _RecipeLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses recursive aliases and documents whose aliases expand past
    :data:`MAX_YAML_VALUES` values (an "alias bomb": a few lines that grow to gigabytes once a
    value is copied or printed), before anything is constructed."""

    def construct_document(self, node):
        _check_expansion(node)
        return super().construct_document(node)


def _check_expansion(root) -> None:
    size: dict[int, int] = {}  # node id -> values it expands to (memoised: shared nodes count per use)
    stack, active = [(root, False)], set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if isinstance(node, yaml.ScalarNode):
            size[key] = 1
            continue
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
        if done:
            active.discard(key)
            size[key] = min(1 + sum(size[id(c)] for c in children), MAX_YAML_VALUES + 1)
            if size[key] > MAX_YAML_VALUES:
                raise yaml.YAMLError(f"aliases expand to more than {MAX_YAML_VALUES:,} values "
                                     f"(line {node.start_mark.line + 1}); a recipe needs far fewer")
            continue
        if key in size:
            continue
        if key in active:
            raise yaml.YAMLError(f"an alias refers to its own anchor (line {node.start_mark.line + 1})")
        active.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def _yaml_load(text: str) -> Any:
    """Parse YAML like ``yaml.safe_load``, bounded; any failure is a ``yaml.YAMLError``."""
    try:
        return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        raise
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as e:  # pyyaml's constructors on odd scalars (2001-13-40)
        raise yaml.YAMLError(f"unreadable value: {e}") from None


def _coerce(value: Any, tp: Any, key: str) -> tuple[Any, str | None]:
    """Convert a YAML value to the field's type; return (value, error)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None, None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            v, err = _coerce(value, arg, key)
            if err is None:
                return v, None
            errors.append(err)
        return value, errors[0]
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            return value, f"{key} must be a list, got {_r(value)}"
        return value, None if all(isinstance(v, str) for v in value) else f"{key} must be a list of strings"
    if tp is bool:
        return (value, None) if isinstance(value, bool) else (value, f"{key} must be true or false, got {_r(value)}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or int(value) != value:
            return value, f"{key} must be an integer, got {_r(value)}"
        return int(value), None
    if tp is float:
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                return value, f"{key} must be a number, got {_r(value)}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, f"{key} must be a number, got {_r(value)}"
        if not math.isfinite(value):
            return value, f"{key} must be a finite number, got {_r(value)}"
        return float(value), None
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return value, f"{key} must be a string, got {_r(value)}"
        return str(value), None
    if tp is dict or origin is dict:
        return (value, None) if isinstance(value, dict) else (value, f"{key} must be a mapping, got {_r(value)}")
    return value, None


def _build(cls, raw: dict, prefix: str, problems: list[str]):
    if not isinstance(raw, dict):
        problems.append(f"{prefix.rstrip('.') or 'recipe'} must be a mapping, got {_r(raw)}")
        return cls()
    hints = field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.6)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            problems.append(f"unknown key {full if full.isprintable() and len(full) <= 80 else _r(full)}{hint}")
            continue
        tp = hints[key]
        if is_section(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, f"{full}.", problems)
            continue
        value, err = _coerce(value, tp, full)
        if err:
            problems.append(err)
            continue
        kwargs[key] = value
    obj = cls(**kwargs)
    for f in dataclasses.fields(cls):
        if is_section(hints[f.name]):
            continue
        value = getattr(obj, f.name)
        choices, check = f.metadata.get("choices"), f.metadata.get("check")
        if choices and value not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{prefix}{f.name} must be one of {', '.join(map(str, choices))}, got {_r(value)}{hint}")
        elif check and (msg := check(value)):
            problems.append(f"{prefix}{f.name} {msg}")
    return obj


def _cross_checks(r: Recipe, problems: list[str]) -> None:
    """Rules that involve more than one field, or a registry."""
    from ..train.methods import METHODS

    if not r.data.train:
        problems.append("data.train is required (path to the training file)")
    if r.method.name not in METHODS:
        problems.append(METHODS.unknown_message(r.method.name, "method.name"))
    else:
        problems.extend(METHODS.get(r.method.name)().problems(r.method))
        if r.model.load_in_4bit and not METHODS.get(r.method.name).supports_4bit:
            able = ", ".join(name for name, cls in METHODS.items() if cls.supports_4bit)
            problems.append(f"model.load_in_4bit needs a method that trains an adapter on a frozen 4-bit base "
                            f"({able}); method.name is {r.method.name}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.lr=1e-4`` -> (['train', 'lr'], 1e-4); the value is parsed as YAML."""
    if "=" not in text:
        raise RecipeError([f"override {text!r} must look like key=value (e.g. train.lr=1e-4)"])
    key, _, value = text.partition("=")
    try:
        parsed = _yaml_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError([f"override {text!r}: {part} is not a section"])
        node[path[-1]] = value
    return raw


def recipe_from_dict(raw: dict, overrides: list[str] = (), source: str | None = None) -> Recipe:
    """Validate a plain mapping (as read from YAML) into a :class:`Recipe`, reporting all problems at once."""
    raw = apply_overrides(dict(raw or {}), list(overrides))
    problems: list[str] = []
    recipe = _build(Recipe, raw, "", problems)
    if not problems:
        _cross_checks(recipe, problems)
    if problems:
        raise RecipeError(problems, source)
    return recipe


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read and validate a recipe YAML file; relative data paths resolve against the recipe's folder."""
    path = Path(path)
    if path.is_dir():
        raise SmalltuneError(f"{path}: is a directory, expected a recipe YAML file")
    if not path.is_file():
        raise SmalltuneError(f"{path}: recipe file not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise SmalltuneError(f"{path}: not UTF-8 text (byte {data[e.start]:#x} on line {line}); "
                             "save the recipe as UTF-8") from None
    try:
        raw = _yaml_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())[:200]
        raise SmalltuneError(f"{path}{line}: not valid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise SmalltuneError(f"{path}: a recipe must be a YAML mapping of sections")
    recipe = recipe_from_dict(raw, overrides, source=str(path))
    _resolve_paths(recipe, path.parent)
    from ..train.methods import warn_ignored_keys

    warn_ignored_keys(recipe.method)  # e.g. method.r set while method.name is ia3: a warning, not an error
    return recipe


FILE_KEYS = (("data", "train"), ("data", "validation"), ("data", "test"), ("regularize", "replay_file"))


def _resolve_paths(recipe: Recipe, base: Path) -> None:
    for section, key in FILE_KEYS:
        value = getattr(getattr(recipe, section), key)
        if value and not Path(value).is_absolute() and (base / value).exists():
            setattr(getattr(recipe, section), key, str((base / value).resolve()))


def file_problems(recipe: Recipe) -> list[str]:
    """What is wrong with the files a valid recipe names: data files missing, folders, of an unknown
    type; a local model folder missing or without config.json / safetensors weights. Reads no data.

    >>> file_problems(load_recipe("recipe.yaml"))
    ['data.train: data/train.jsonl: file not found']
    """
    from ..data.readers import file_format
    from ..models import BUILTIN_MODELS, check_weights, resolve

    problems = []
    for section, key in FILE_KEYS:
        value = getattr(getattr(recipe, section), key)
        if value:
            try:
                file_format(Path(value))
            except SmalltuneError as e:
                problems.append(f"{section}.{key}: {e}")
    name = recipe.model.name
    if name not in BUILTIN_MODELS and (Path(name).expanduser().exists() or name.startswith((".", "/", "~"))):
        try:
            check_weights(Path(resolve(name)))
        except SmalltuneError as e:
            problems.append(str(e))
    return problems
