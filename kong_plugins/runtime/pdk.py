"""The ``kong`` object a phase handler receives: attribute chains that become PDK calls to Kong.

``kong.request.get_header("x")`` sends ``{"Method": "kong.request.get_header", "Args": ["x"]}``
back to Kong as the answer of the current RPC; Kong runs the Lua function and answers with a
``plugin.Step*`` call carrying the result (``kong/runloop/plugin_servers/rpc/mp_rpc.lua``,
``bridge_loop``). The node tree is built once per process and shared by all events: the event a
call belongs to is the greenlet running it, so a call costs one attribute lookup and one greenlet
switch on our side.

Errors are Python style whatever ``--no-lua-style`` says: a call Kong answers with
``plugin.StepError`` raises :class:`PDKError`.
"""

from __future__ import annotations

from typing import Any

from greenlet import getcurrent
from kong_pdk.exception import PDKException

#: Calls after which Kong abandons the handler: in the access phase ``kong.response.exit`` stores a
#: delayed response and yields the plugin coroutine for good (``kong/pdk/response.lua``), so no
#: Step ever answers them (kong-pdk's ``non_return_methods`` / ``terminal_methods``).
TERMINAL_METHODS = frozenset({"kong.response.exit", "kong.response.error"})

_LOG_PREFIX = "kong.log"


class PDKError(PDKException):  # type: ignore[misc]  # kong-pdk ships no type hints
    """Kong answered a PDK call with an error (``plugin.StepError``)."""

    def __init__(self, method: str, message: Any) -> None:
        self.method = method
        self.kong_message = message
        super().__init__(f"{method}: {message}")


class ResponseExited(BaseException):
    """Unwinds a handler after ``kong.response.exit/error``, as the Lua coroutine is abandoned.

    A ``BaseException`` so that ``except Exception`` in plugin code does not swallow it.
    """


class EventClosed(BaseException):
    """A PDK call on an event Kong no longer serves (after an exit, abandoned or timed out)."""


class OutsideEvent(RuntimeError):
    """A PDK call from code that is not running a phase handler (e.g. a background greenlet)."""


def _sanitise_log_args(args: tuple[Any, ...]) -> list[Any]:
    # kong.log.* arguments are concatenated by Lua; anything msgpack can't carry is stringified,
    # as kong-pdk does, so a log line never fails a request.
    return [a if isinstance(a, str | int | float | bool | list | dict) else str(a) for a in args]


class PDKNode:
    """One segment of ``kong.a.b.c``; calling it performs the PDK call named by its path."""

    __slots__ = ("__dict__", "_is_log", "_path")

    def __init__(self, path: str) -> None:
        self._path = path
        self._is_log = path == _LOG_PREFIX or path.startswith(_LOG_PREFIX + ".")

    def __getattr__(self, name: str) -> PDKNode:
        if name.startswith("__"):
            raise AttributeError(name)
        child = PDKNode(f"{self._path}.{name}")
        self.__dict__[name] = child
        return child

    def __call__(self, *args: Any) -> Any:
        try:
            pdk_call = getcurrent().pdk_call
        except AttributeError:
            raise OutsideEvent(f"{self._path} called outside a phase handler") from None
        return pdk_call(self._path, _sanitise_log_args(args) if self._is_log else list(args))

    def __repr__(self) -> str:
        return f"<PDK {self._path}>"


#: The object passed to every phase handler.
KONG = PDKNode("kong")

__all__ = ["KONG", "TERMINAL_METHODS", "EventClosed", "OutsideEvent", "PDKError", "PDKNode", "ResponseExited"]
