"""The msgpack RPC client side of Kong's external plugin protocol.

Mirrors ``Rpc:call`` in Kong's ``kong/runloop/plugin_servers/rpc/mp_rpc.lua`` (3.9):

- every call takes a connection from a keepalive pool (``ngx.socket.connect`` + ``setkeepalive``),
  so consecutive calls of one event may travel on different connections;
- a request is ``[0, msg_id, method, [args]]``; while waiting for the answer, notifications
  ``[2, label, args]`` are dispatched (``serverPid``, see ``plugin.lua``);
- the answer is ``[1, msg_id, error, result]``; a different ``msg_id`` is a Lua ``assert`` failure,
  i.e. an error raised through the caller (:class:`LuaError`);
- a failed read (timeout, closed socket) returns ``nil, "no data"`` and a failed connect returns the
  connect error: both are ordinary error values that the caller logs.

Kong's cosocket timeout defaults to 60 s (``lua_socket_read_timeout``); the stand-in takes it as
``timeout`` so that tests can make a hung plugin server fail fast instead of blocking.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack

#: ``lua_socket_pool_size`` default: idle connections kept per socket path.
KEEPALIVE_POOL_SIZE = 30
DEFAULT_RPC_TIMEOUT = 60.0


class LuaError(Exception):
    """A Lua ``error()`` raised inside Kong's code: it unwinds the running plugin handler.

    In the access phase Kong turns it into a 500 "An unexpected error occurred"
    (``execute_access_plugins_iterator`` in ``kong/init.lua``); in a log timer it is only logged.
    """


class RpcFailure(Exception):
    """An ``(nil, err)`` return of ``Rpc:call``: the error value Kong logs and moves on with."""


class RpcAccount:
    """Per-request RPC accounting: wall time from send to answer, summed, plus call counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds = 0.0
        self.seconds_by_phase: dict[str, float] = {}
        self.calls = 0

    def add(self, phase: str, seconds: float) -> None:
        with self._lock:
            self.seconds += seconds
            self.seconds_by_phase[phase] = self.seconds_by_phase.get(phase, 0.0) + seconds
            self.calls += 1


NotificationHandler = Callable[[str, Any], None]


class MsgpackRpc:
    """One plugin server's RPC endpoint: a unix socket path and a keepalive pool."""

    def __init__(
        self,
        socket_path: str,
        timeout: float = DEFAULT_RPC_TIMEOUT,
        on_notification: NotificationHandler | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._pool: list[socket.socket] = []
        self._pool_lock = threading.Lock()
        self._closed = False
        self.on_notification = on_notification
        #: Every connection ever opened, for tests that look at how calls were spread.
        self.connections_opened = 0

    def _connect(self) -> socket.socket:
        with self._pool_lock:
            if self._pool:
                return self._pool.pop()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(self.timeout)
        try:
            conn.connect(self.socket_path)
        except OSError:
            conn.close()
            raise
        with self._pool_lock:
            self.connections_opened += 1
        return conn

    def _keepalive(self, conn: socket.socket) -> None:
        with self._pool_lock:
            if not self._closed and len(self._pool) < KEEPALIVE_POOL_SIZE:
                self._pool.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, []
        for conn in pool:
            conn.close()

    def call(self, method: str, *args: Any, account: RpcAccount | None = None, phase: str = "") -> Any:
        """Send one request and wait for its answer; raise :class:`RpcFailure` on ``(nil, err)``."""
        msg_id = next(self._ids)
        try:
            conn = self._connect()
        except OSError as exc:
            raise RpcFailure(f"trying to connect: {exc}") from exc
        try:
            # A Lua string is bytes; lua-MessagePack sends it as msgpack str whatever it holds, and
            # the stand-in keeps such bytes as surrogate-escaped text (see _luaplugin): the same wire.
            payload = msgpack.packb([0, msg_id, method, list(args)], use_bin_type=True,
                                    unicode_errors="surrogateescape")
        except (TypeError, ValueError) as exc:
            self._keepalive(conn)
            raise LuaError(f"pack: {exc}") from exc
        started = time.perf_counter()
        returned = False
        try:
            try:
                conn.sendall(payload)
            except OSError as exc:
                raise RpcFailure(str(exc)) from exc
            unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, unicode_errors="surrogateescape")
            while True:
                message = self._read_one(conn, unpacker)
                if message is None:
                    # a timed-out or reset cosocket cannot go back to the pool
                    raise RpcFailure("no data")
                if message[0] == 2:
                    self._notify(message)
                    continue
                if message[0] != 1:
                    raise LuaError("RPC response expected from Go plugin server")
                if message[1] != msg_id:
                    raise LuaError("unexpected RPC response ID from Go plugin server")
                self._keepalive(conn)
                returned = True
                if message[2] is not None:
                    raise RpcFailure(str(message[2]))
                return message[3]
        finally:
            if not returned:
                conn.close()
            if account is not None:
                account.add(phase, time.perf_counter() - started)

    @staticmethod
    def _read_one(conn: socket.socket, unpacker: msgpack.Unpacker) -> list[Any] | None:
        while True:
            for obj in unpacker:
                if isinstance(obj, list) and len(obj) >= 3:
                    return obj
            try:
                chunk = conn.recv(4096)
            except OSError:
                return None
            if not chunk:
                return None
            unpacker.feed(chunk)

    def _notify(self, message: list[Any]) -> None:
        if self.on_notification is not None:
            self.on_notification(str(message[1]), message[2])
