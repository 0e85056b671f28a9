"""Facts about packages on disk, found without importing them."""

from __future__ import annotations

import os
import pkgutil
from typing import List


def get_child_modules(path: str) -> List[str]:
    """Names of the modules and packages directly inside the package at ``path``.

    ``path`` is the package's directory or its ``__init__`` file (what ``__file__`` says).  Names
    are bare (``"util"``, not ``"pkg.util"``), sorted; nothing is imported.
    """
    if os.path.isfile(path):
        path = os.path.dirname(path)
    return sorted(name for _finder, name, _ispkg in pkgutil.iter_modules([path]))
