"""Modules that are also their main function: ``caffezoo.download(...)``.

``caffezoo.download`` and ``caffezoo.validate`` are modules (``import
caffezoo.download`` and ``caffezoo.download.download_many`` keep working) and
the top-level calls of the public API at once: once Python imports a
submodule it sets it as the package's attribute, so a function of the same
name could not stay there.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

__all__ = ["callable_module"]


def callable_module(name: str, function: Callable[..., Any]) -> None:
    """Make the module ``name`` callable: calling it calls ``function``."""

    class CallableModule(types.ModuleType):
        __call__ = staticmethod(function)

    CallableModule.__name__ = f"{name} (callable: {function.__name__})"
    sys.modules[name].__class__ = CallableModule
