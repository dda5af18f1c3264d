"""k-fold cross-validation: how sure is a number measured on a few hundred examples?

* ``folds.py``     folds stratified by category, grouped by the audit's near-duplicate clusters
* ``runner.py``    train + evaluate each fold in one process on one loaded base model; ``cv.json``
* ``aggregate.py`` per-fold numbers from the fold folders, mean and 95% CI across folds
* ``page.py``      ``cv.md`` and ``cv.html``
"""


def cross_validate(recipe, folds: int = 5, **kwargs) -> dict:
    """k-fold training and evaluation; see :func:`smalltune.cv.runner.cross_validate`.

    >>> cv = smalltune.cv.cross_validate(smalltune.load_recipe("recipe.yaml"), folds=5)
    """
    from .runner import cross_validate as _cv

    return _cv(recipe, folds=folds, **kwargs)


__all__ = ["cross_validate"]
