"""Anti-forgetting regularisers: plugins of the one training protocol (``train/plugins.py``).

* ``ewc.py``      Elastic Weight Consolidation: a penalty towards the starting weights
* ``sam.py``      Sharpness-Aware Minimization: wraps the step (two passes per micro-batch)
* ``neftune.py``  NEFTune: noise on the input embeddings while training
* ``replay.py``   replay: mixes general data into the training set (a data hook)
* ``unlikelihood.py`` unlikelihood on stale answers an example replaces (updates, corrections)

Every regulariser recomputes its state deterministically in ``setup`` (the EWC Fisher under the
starting weights), so ``--resume`` needs nothing extra in the checkpoint.
"""

from __future__ import annotations

from ...registry import Registry
from ..plugins import Plugin


class Regularizer(Plugin):
    """A plugin that changes what or how training optimises; listed as a regulariser in the run log."""

    order = 50


REGULARIZERS: Registry[type[Regularizer]] = Registry("regularizer")


# Plugins register themselves on import; this is the one place that imports them.
from . import ewc, neftune, sam, unlikelihood  # noqa: E402,F401
from .. import tracking  # noqa: E402,F401  (experiment trackers only listen; registered here so every run builds them)
