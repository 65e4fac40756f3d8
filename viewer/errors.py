"""Errors of the server's composition root (configuration, command line).

::

    ViewerError             base; ``code`` is a stable machine string
    └── ConfigError         (also ValueError) an IAIN_* variable or option is invalid
"""

from __future__ import annotations

__all__ = ["ConfigError", "ViewerError"]


class ViewerError(Exception):
    code = "viewer_error"


class ConfigError(ViewerError, ValueError):
    code = "invalid_config"
