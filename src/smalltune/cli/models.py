"""smalltune models"""

NAME = "models"
HELP = "list the built-in models and where their converted copies are cached"


def configure(p):
    pass


def run(args) -> int:
    from ..models import BUILTIN_MODELS, cache_dir

    for name, spec in BUILTIN_MODELS.items():
        cached = (cache_dir() / "models" / name / "config.json").exists()
        print(f"{name}\t{spec.description}\t{'cached' if cached else 'converted on first use'}")
    print(f"cache: {cache_dir()} (set SMALLTUNE_CACHE to move it)")
    return 0
