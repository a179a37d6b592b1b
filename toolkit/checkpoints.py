"""Public path of the checkpoints: ``from toolkit.checkpoints import open_store, checkpointed``.

The code lives in :mod:`toolkit.tasks.checkpoints` (base, sqlite, mysql, progress).
"""

from toolkit.tasks.checkpoints import *  # noqa: F403 - re-export the package's public names
from toolkit.tasks.checkpoints import __all__ as __all__
