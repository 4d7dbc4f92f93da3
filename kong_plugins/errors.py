"""The suite's exception hierarchy.

::

    KongPluginsError
    ├── ConfigError        a plugin instance's config is invalid; raised from ``Plugin.__init__``
    │                      so that Kong's StartInstance fails with a message naming the field
    └── StorageError       any failure of a storage backend (connection refused, timeout, cluster
                           reconfiguration, script error); the one error boundary the plugins
                           handle with their fail-open / fail-closed setting
"""

from __future__ import annotations


class KongPluginsError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(KongPluginsError):
    """Invalid plugin configuration, with the dotted path of the offending field.

    ``str(error)`` reads ``config.<path>: <message>`` -- the text Kong logs and returns from
    StartInstance, so an operator can find the field without reading our source.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"config.{field}: {message}" if field else message)


class StorageError(KongPluginsError):
    """A storage backend failed; the original exception is chained as ``__cause__``."""


__all__ = ["ConfigError", "KongPluginsError", "StorageError"]
