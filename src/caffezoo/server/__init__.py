"""The caffezoo server: a Gist-compatible API (and, later, the web wiki) over SQL storage.

Needs the ``server`` extra: ``pip install 'caffezoo[server]'``.

>>> from caffezoo.server import create_app, Storage        # doctest: +SKIP
>>> app = create_app("postgresql://zoo@localhost/zoo")      # doctest: +SKIP
"""

from __future__ import annotations

from .app import create_app
from .storage import Storage

__all__ = ["Storage", "create_app"]
