"""An external plugin as Kong 3.9 drives it: instances, events and the bridge loop.

From ``kong/runloop/plugin_servers/plugin.lua`` (``get_instance_id``, ``reset_instance``,
``rpc_notifications:serverPid``, ``build_phases``) and ``rpc/mp_rpc.lua`` (``handle_event``,
``bridge_loop``, ``call_start_instance``):

- instances are cached per plugin id (``kong.plugin.get_id()``) and reused while ``__seq__`` and
  ``__plugin_id`` match; a concurrent starter waits in 0.1 s steps for at most 10 s;
- ``StartInstance {Name, Config=cjson.encode(conf)}`` failing is ``error(err)`` -- a Lua error that
  unwinds the handler (500 in the access phase) -- after logging ``starting instance: <err>``;
- any other RPC error of an event is logged and the request goes on (fail-open); an error containing
  "no plugin instance" drops every cached instance of the plugin and retries the event;
- the bridge loop answers each ``{Method, Args}`` with the typed Step of ``get_step_method``; an
  exit/error abandons the loop without sending a Step.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from ._context import DelayedResponse, RequestContext
from ._pdk import Pdk, get_step_method
from ._process import PluginInfo
from ._rpc import LuaError, MsgpackRpc, RpcFailure

SLEEP_STEP = 0.1
WAIT_TIME = 10.0
#: Kong retries "no plugin instance" without bound; the stand-in stops a runaway server here.
MAX_INSTANCE_RETRIES = 8


@dataclass
class InstanceInfo:
    id: int | None
    seq: Any
    conf: dict[str, Any]


class ExternalPlugin:
    """One registered external plugin and its RPC endpoint."""

    def __init__(self, info: PluginInfo, rpc: MsgpackRpc, pdk: Pdk, log_sink: Any) -> None:
        self.info = info
        self.name = info.name
        self.priority = info.priority
        self.phases = frozenset(info.phases)
        self.rpc = rpc
        self.pdk = pdk
        self._log = log_sink
        self._instances: dict[str, InstanceInfo] = {}
        self._lock = threading.Lock()
        self.server_pid: int | None = None
        #: StartInstance calls made, for tests of the instance cache.
        self.start_instance_calls = 0

    # -- notifications ---------------------------------------------------------------------------------
    def on_notification(self, label: str, args: Any) -> None:
        if label != "serverPid":
            return
        try:
            pid = int(args)
        except (TypeError, ValueError):
            return
        with self._lock:
            if self.server_pid is not None and pid != self.server_pid:
                self._instances.clear()
            self.server_pid = pid

    def reset_instances(self) -> None:
        with self._lock:
            self._instances.clear()

    # -- instances -------------------------------------------------------------------------------------
    def get_instance_id(self, conf: dict[str, Any], ctx: RequestContext) -> tuple[int | None, str | None]:
        key = str(conf["__plugin_id"])
        waited = 0
        while True:
            with self._lock:
                info = self._instances.get(key)
                if info is None or info.id is not None:
                    break
            time.sleep(SLEEP_STEP)
            waited += 1
            if waited > WAIT_TIME / SLEEP_STEP:
                with self._lock:
                    self._instances.pop(key, None)
                return None, f"Could not claim instance_id for {self.name} (key: {key})"

        with self._lock:
            info = self._instances.get(key)
            if (
                info is not None
                and info.id is not None
                and info.seq == conf.get("__seq__")
                and info.conf.get("__plugin_id") == key
            ):
                return info.id, None
            old_id = info.id if info is not None else None
            if info is None:
                info = InstanceInfo(None, conf.get("__seq__"), conf)
                self._instances[key] = info
            else:
                info.id = None
            self.start_instance_calls += 1

        try:
            status = self.rpc.call(
                "plugin.StartInstance",
                {"Name": self.name, "Config": json.dumps(conf, separators=(",", ":"))},
                account=ctx.account,
                phase=ctx.phase,
            )
        except RpcFailure as exc:
            self._log(ctx, "err", f"starting instance: {exc}")
            with self._lock:
                self._instances.pop(key, None)
            raise LuaError(str(exc)) from exc
        if not isinstance(status, dict):
            with self._lock:
                self._instances.pop(key, None)
            raise LuaError("attempt to index local 'status' (a nil value)")
        with self._lock:
            info.id = status.get("Id")
            info.conf = conf
            info.seq = conf.get("__seq__")
        if old_id is not None:
            # another request may have closed it first; Kong ignores this too
            with contextlib.suppress(RpcFailure):
                self.rpc.call("plugin.CloseInstance", old_id, account=ctx.account, phase=ctx.phase)
        return info.id, None

    # -- events ------------------------------------------------------------------------------------------
    def handle_event(self, conf: dict[str, Any], phase: str, ctx: RequestContext) -> None:
        """mp_rpc.lua ``Rpc:handle_event``; raises LuaError/DelayedResponse like the Lua unwinds."""
        for _ in range(MAX_INSTANCE_RETRIES):
            instance_id, err = self.get_instance_id(conf, ctx)
            if err is None:
                err = self._bridge_loop(instance_id, phase, ctx)
            if err is None:
                return
            if "no plugin instance" in err.lower():
                self.reset_instances()
                self._log(ctx, "warn", err)
                continue
            self._log(ctx, "err", err)
            return
        self._log(
            ctx, "err", f"{self.name}: gave up after {MAX_INSTANCE_RETRIES} 'no plugin instance' retries"
        )

    def _bridge_loop(self, instance_id: int | None, phase: str, ctx: RequestContext) -> str | None:
        try:
            step_in = self.rpc.call(
                "plugin.HandleEvent",
                {"InstanceId": instance_id, "EventName": phase},
                account=ctx.account,
                phase=phase,
            )
        except RpcFailure as exc:
            return str(exc)
        event_id = _index(step_in, "EventId")
        while True:
            data = _index(step_in, "Data")
            if data == "ret":
                return None
            method = _index(data, "Method")
            args = data.get("Args") if isinstance(data, dict) else None
            ctx.count_pdk_call(self.name, phase)
            # DelayedResponse propagates: the coroutine yields and no Step is ever sent
            result = self.pdk.call(ctx, str(method), args)
            step_method, step_res = get_step_method(str(method), result, None)
            try:
                step_in = self.rpc.call(
                    step_method, {"EventId": event_id, "Data": step_res}, account=ctx.account, phase=phase
                )
            except RpcFailure as exc:
                return str(exc)


def _index(table: Any, key: str) -> Any:
    """Lua's ``t.key``: indexing a non-table is a Lua error."""
    if isinstance(table, dict):
        return table.get(key)
    kind = "nil" if table is None else type(table).__name__
    raise LuaError(f"attempt to index a {kind} value (field '{key}')")


__all__ = ["DelayedResponse", "ExternalPlugin"]
