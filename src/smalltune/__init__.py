"""smalltune: fine-tune language models on small datasets without the classic traps.

The flow is audit -> plan -> train -> evaluate -> report; each stage is a function here and a
CLI verb of the same name, and all of them read and write one run directory.

>>> import smalltune
>>> recipe = smalltune.load_recipe("examples/dental/recipe.yaml")
>>> result = smalltune.train(recipe)
>>> model, tokenizer, recipe = smalltune.load_trained(result.run_dir)
"""

__version__ = "0.1.0"

# Stage functions share their subpackage's name; importing them here binds the function (not the
# subpackage) to ``smalltune.<stage>``. Subpackage __init__ files stay free of heavy imports.
from .audit import audit  # noqa: E402
from .data import load_examples  # noqa: E402
from .errors import SmalltuneError  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .pipeline import run  # noqa: E402
from .plan import plan  # noqa: E402
from .recipe import Recipe, load_recipe, recipe_from_dict  # noqa: E402
from .report import report  # noqa: E402
from .train import load_trained, train  # noqa: E402

__all__ = [
    "__version__", "SmalltuneError", "Recipe", "load_recipe", "recipe_from_dict",
    "load_examples", "train", "load_trained",
    "evaluate",
    "audit",
    "report", "run",
    "plan",
]
