"""The web pages: what is in the registry, how to pull it, and what it takes on disk.

Served by the registry itself under ``{http.prefix}/ui/`` (``ui.enabled``), from
Jinja templates and two static files in this package: nothing is fetched from
elsewhere at run time. ``pages.py`` holds the routes, ``inventory.py`` the
reads of the store, ``viewers.py`` sign-in and who may see what.
"""

from __future__ import annotations

from .pages import register_ui

__all__ = ["register_ui"]
