"""smalltune recipe [--explain | --template]"""

NAME = "recipe"
HELP = "document the recipe schema: every key, its default and what it does"


def configure(p):
    g = p.add_mutually_exclusive_group()
    g.add_argument("--template", action="store_true", help="print a complete commented recipe with defaults")
    g.add_argument("--check", metavar="RECIPE",
                   help="validate a recipe file and the files it names (data files, a local model folder); "
                        "report every problem")


def run(args) -> int:
    from ..errors import RecipeError
    from ..recipe import Recipe, file_problems, iter_fields, load_recipe

    if args.template:
        print(Recipe().to_yaml(), end="")
        return 0
    if args.check:
        problems = file_problems(load_recipe(args.check))
        if problems:
            raise RecipeError(problems, args.check)
        print(f"{args.check}: valid")
        return 0
    for key, _tp, default, help_text, choices in iter_fields():
        extra = f" [{'|'.join(map(str, choices))}]" if choices else ""
        print(f"{key:32} {default!s:16} {help_text}{extra}")
    return 0
