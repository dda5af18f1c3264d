"""The recipe: one YAML file that carries everything a run needs.

Each field is defined and documented exactly once, in :mod:`.sections` through :func:`option`; the
CLI help (``smalltune recipe --explain``), the comments in written YAML, the validation errors and
the stages' defaults all read that one definition. Validation collects every problem before
reporting, and names the key the user typed (``train.lr must be > 0, got -1``).

* :mod:`.options`   ``option()`` and the value checks
* :mod:`.sections`  the section dataclasses and :class:`Recipe`
* :mod:`.load`      YAML loading, coercion, overrides, validation, file checks
* :mod:`.dump`      the key table and commented YAML

>>> r = load_recipe("recipe.yaml", overrides=["train.lr=1e-4"])
>>> r.train.lr
0.0001
"""

from __future__ import annotations

from .dump import field_help, iter_fields
from .load import (FILE_KEYS, MAX_YAML_VALUES, apply_overrides, file_problems, load_recipe, parse_override,
                   recipe_from_dict)
from .options import at_least, fraction, non_negative, option, positive
from .sections import (TRACKERS, DataSection, EarlyStoppingSection, EvalSection, GuardsSection, MethodSection,
                       ModelSection, Recipe, RegularizeSection, TargetsSection, TrainSection, TuneSection,
                       UpdateSection)

__all__ = [
    "FILE_KEYS", "MAX_YAML_VALUES", "TRACKERS", "DataSection", "EarlyStoppingSection", "EvalSection", "GuardsSection",
    "MethodSection", "ModelSection", "Recipe", "RegularizeSection", "TargetsSection", "TrainSection", "TuneSection",
    "UpdateSection", "apply_overrides", "at_least", "field_help", "file_problems", "fraction", "iter_fields",
    "load_recipe", "non_negative", "option", "parse_override", "positive", "recipe_from_dict",
]
