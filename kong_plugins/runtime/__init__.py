"""Our plugin server for Kong's external plugin protocol (see ``server.py`` for the design).

Importing this package does not import gevent's server machinery; the console scripts in ``cli.py``
monkey-patch first and then start :func:`serve_unix_socket`.
"""

from kong_plugins.runtime.pdk import KONG, EventClosed, OutsideEvent, PDKError, ResponseExited

__all__ = ["KONG", "EventClosed", "OutsideEvent", "PDKError", "ResponseExited"]
