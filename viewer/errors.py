"""Errors of the server's composition root (configuration, command line).

::

    ViewerError                     base; ``code`` is a stable machine string
    ├── ConfigError                 (also ValueError) an IAIN_* variable or option is invalid
    └── OpenSeadragonMissingError   (also FileNotFoundError) ``npm ci`` was not run
"""

from __future__ import annotations

__all__ = ["ConfigError", "OpenSeadragonMissingError", "ViewerError"]


class ViewerError(Exception):
    code = "viewer_error"


class ConfigError(ViewerError, ValueError):
    code = "invalid_config"


class OpenSeadragonMissingError(ViewerError, FileNotFoundError):
    """``node_modules/openseadragon`` is absent: the viewer pages cannot work."""

    code = "openseadragon_missing"
