"""The plugin server: Kong 3.9's external plugin protocol served with gevent and direct greenlet switches.

Protocol (``kong/runloop/plugin_servers/rpc/mp_rpc.lua``): msgpack requests ``[0, id, method, args]``
answered by ``[1, id, error, result]``. Kong opens a connection per call from a keepalive pool and
sends one request at a time on it, so consecutive calls of one event may arrive on different
connections. An event is a phase of one request: ``plugin.HandleEvent`` starts it, the answer is
either ``"ret"`` (done) or a PDK call ``{Method, Args}``; Kong runs the call and sends the result
back with ``plugin.Step*`` (``plugin.StepError`` when the Lua function returned ``nil, err``).

How events run. Each event (:class:`Event`) runs on a worker greenlet (:class:`EventWorker`, taken
from a pool: a new greenlet costs more than a whole round trip). The connection greenlet that
received HandleEvent (or a Step) *lends* itself to the event: it switches into the worker and gets
control back when the handler makes its next PDK call, returns, or raises. That switch is the whole
hand-off, so a PDK round trip costs us one greenlet switch each way -- no queues, locks or thread
wake-ups (the stock kong-pdk server hands every call across a Queue between two threads).
Lending is safe because Kong sends nothing else on a connection until it has the answer. When a
handler blocks on I/O (Redis, HTTP, ``time.sleep`` -- all cooperative under monkey patching), it
switches to the gevent hub and every other event keeps running; the lender simply waits with it.

Guarantees, each covered by tests in ``tests/runtime``:

* an exception in a handler, before or after any PDK call, is logged once with the plugin name and
  traceback and turned into the instance's failure behaviour: ``open`` answers ``"ret"`` (the
  request continues), ``closed`` answers with ``kong.response.exit(500, JSON)``; an exception in
  ``Plugin.__init__`` fails StartInstance with a message (naming the field for ``ConfigError``);
* nothing of an event survives it: after ``kong.response.exit/error`` the handler is unwound with
  :class:`ResponseExited` (Kong never sends a Step for those); an event waiting longer than
  ``step_timeout`` for a Step (Kong abandoned it) or running longer than ``handler_timeout`` is
  unwound by the reaper;
* instance lifecycle as Kong's ``plugin.lua`` expects, with ids that never repeat across restarts
  of the server (a stale id from a previous process gets "no plugin instance", so Kong restarts it,
  instead of hitting another instance).
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import os
import secrets
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
from greenlet import getcurrent, greenlet

from kong_plugins.errors import ConfigError
from kong_plugins.runtime.module import PluginModule
from kong_plugins.runtime.pdk import KONG, TERMINAL_METHODS, EventClosed, PDKError, ResponseExited

log = logging.getLogger("kong_plugins.runtime")

#: Phases in which Kong honours kong.response.exit (delayed response in the access/rewrite runloop).
_EXIT_PHASES = frozenset({"access", "rewrite"})

_RUNNING = 0
_AWAITING_STEP = 1

_FAIL_CLOSED_STATUS = 500

#: sun_path holds 108 bytes on Linux, the terminating NUL included.
_MAX_UNIX_PATH_BYTES = 107

#: Bytes read from a connection at once; Kong's requests are far smaller, big bodies take several reads.
_RECV_BUFFER_BYTES = 65536


class RPCError(Exception):
    """An error returned to Kong as the ``error`` element of a response."""


class EventAbandoned(BaseException):
    """Raised into an event Kong stopped serving (no Step within ``step_timeout``)."""


class HandlerTimeout(Exception):
    """Raised into a handler that ran longer than ``handler_timeout`` without a PDK call."""


@dataclass
class Instance:
    """A configured plugin object, one per Kong plugin entity (``plugin.lua`` ``running_instances``)."""

    id: int
    name: str
    config: dict[str, Any]
    plugin: Any
    handlers: dict[str, Callable[[Any], Any]]
    failure_mode: str
    #: ``kong.ctx.shared`` key of the plugin's decision mark (``kong_plugins.marks``), if it marks.
    decision_mark_key: str | None = None
    start_time: float = field(default_factory=time.time)
    last_used: float = 0.0


#: First element of what a worker hands back to its lender when the event's handler has ended
#: (a PDK call is handed back as ``(method, args)``).
_DONE = object()

#: Idle workers kept for reuse; beyond this many, a worker whose event ends simply finishes.
_MAX_IDLE_WORKERS = 256


class Event:
    """One phase of one request, run by an :class:`EventWorker`; PDK calls made meanwhile belong to it."""

    __slots__ = ("closed", "event_id", "instance", "phase", "since", "state", "worker")

    def __init__(self, event_id: int, instance: Instance, phase: str) -> None:
        self.event_id = event_id
        self.instance = instance
        self.phase = phase
        self.state = _RUNNING
        self.closed = False
        #: clock() when the event last changed state; the reaper derives its deadline from it.
        self.since = 0.0
        #: The greenlet running the handler, from the first switch until the event ends.
        self.worker: EventWorker | None = None


class ComputeTimes:
    """What each event computed: the handler's time minus the time it spent switched out waiting
    for Kong's answers to its PDK calls, appended to a file as ``phase<TAB>microseconds`` lines
    (``--compute-times``; buffered, written out when the server stops).

    The plugin's own cost per request phase as it runs in this process -- cold caches, the
    runtime's PDK objects, the CPU shared with Kong -- which no in-process benchmark shows and an
    RPC time mixes with Kong's work. Time blocked on the plugin's own I/O (Redis) is included:
    the handler holds the event meanwhile. Off by default: two clock reads per PDK call.
    """

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115 -- closed on stop

    def record(self, phase: str, seconds: float) -> None:
        self._file.write(f"{phase}\t{seconds * 1e6:.1f}\n")

    def close(self) -> None:
        self._file.close()


class EventWorker(greenlet):  # type: ignore[misc]
    """A greenlet that runs events one after another, pooled by the server.

    Pooled because creating a greenlet is the most expensive step of an event: on CPython 3.11
    each new greenlet maps a fresh Python data stack (mmap/munmap, ~9 µs with its page faults),
    more than all the Python work of a round trip. A worker that finished an event returns to
    the pool and waits, suspended, for its next event.
    """

    def __init__(self, server: PluginServer) -> None:
        super().__init__()
        self.server = server
        self.event: Event | None = None
        #: Seconds the current event has waited for PDK answers (kept only with ComputeTimes).
        self.waited = 0.0

    def run(self, event: Event) -> tuple[object, Any]:
        server = self.server
        while True:
            self.event = event
            answer = (_DONE, server.run_handler(event))
            # An idle worker must not keep its last event (and the request data it holds) alive.
            self.event = None
            del event
            if not server.recycle(self):
                return answer
            event = self.parent.switch(answer)

    def pdk_call(self, method: str, args: list[Any]) -> Any:
        event = self.event
        if event is None or event.closed:
            raise EventClosed(method)
        if self.server.compute_times is None:
            value, error = self.parent.switch((method, args))
        else:
            started = time.perf_counter()
            value, error = self.parent.switch((method, args))
            self.waited += time.perf_counter() - started
        if error is not None:
            raise PDKError(method, error)
        return value


class PluginServer:
    """Serves one plugin module to Kong; transport-agnostic (see :func:`serve_unix_socket`)."""

    def __init__(
        self,
        module: PluginModule,
        *,
        step_timeout: float = 60.0,
        handler_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        compute_times: ComputeTimes | None = None,
    ) -> None:
        self.module = module
        self.compute_times = compute_times
        self.step_timeout = step_timeout
        self.handler_timeout = handler_timeout
        self.clock = clock
        self.instances: dict[int, Instance] = {}
        # Random base: ids of a restarted server never collide with ids Kong cached before.
        self._instance_ids = itertools.count(secrets.randbelow(1 << 20) * 1000)
        self._event_ids = itertools.count(1)
        self.events: dict[int, Event] = {}
        self._idle_workers: list[EventWorker] = []
        # Kong may still send a Step for an event we ended on exit (a phase where Lua returned):
        # answering "ret" ends its bridge loop quietly instead of logging "no event".
        self._recently_closed: dict[int, None] = {}
        self.last_start_instance = 0.0
        self.last_close_instance = 0.0
        self.methods: dict[str, Callable[..., Any]] = {
            "plugin.GetStatus": self.get_status,
            "plugin.GetPluginInfo": self.get_plugin_info,
            "plugin.StartInstance": self.start_instance,
            "plugin.InstanceStatus": self.instance_status,
            "plugin.CloseInstance": self.close_instance,
            "plugin.HandleEvent": self.handle_event,
            "plugin.Step": self.step,
            "plugin.StepError": self.step_error,
        }
        for typed in ("Credential", "Consumer", "Route", "Service", "MultiMap", "MemoryStats", "Plugin"):
            self.methods[f"plugin.Step{typed}"] = self.step

    # -- RPC dispatch -------------------------------------------------------------------------

    def dispatch(self, message: Any) -> list[Any]:
        """Answer one request message; never raises (every failure becomes an RPC error)."""
        try:
            _kind, msgid, method, args = message
        except (TypeError, ValueError):
            return [1, None, "malformed request: expected [0, msgid, method, args]", None]
        handler = self.methods.get(method)
        if handler is None:
            return [1, msgid, f"RPC method {method!r} is not supported", None]
        try:
            result = handler(*(args or ()))
        except RPCError as exc:
            return [1, msgid, str(exc), None]
        except Exception as exc:
            log.error("%s: internal error in %s\n%s", self.module.name, method, traceback.format_exc())
            return [1, msgid, f"internal error in {method}: {type(exc).__name__}", None]
        return [1, msgid, None, result]

    # -- instances ----------------------------------------------------------------------------

    def get_status(self, *_: Any) -> dict[str, Any]:
        return {
            "Pid": os.getpid(),
            "Plugins": {
                self.module.name: {
                    "Name": self.module.name,
                    "Modtime": self.module.mtime,
                    "LoadTime": self.module.load_time,
                    "Instances": [self._instance_status(i) for i in self.instances.values()],
                    "LastStartInstance": self.last_start_instance,
                    "LastCloseInstance": self.last_close_instance,
                    # Not in kong-pdk's shape (Kong ignores it): lets operators and tests see leaks.
                    "EventsInFlight": len(self.events),
                }
            },
        }

    def get_plugin_info(self, name: str) -> dict[str, Any]:
        if name != self.module.name:
            raise RPCError(f"plugin {name!r} is not served here (this server serves {self.module.name!r})")
        return self.module.info()

    def start_instance(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request.get("Name")
        if name != self.module.name:
            raise RPCError(f"plugin {name!r} is not served here (this server serves {self.module.name!r})")
        raw_config = request.get("Config")
        try:
            config = json.loads(raw_config) if isinstance(raw_config, str | bytes) else raw_config
        except ValueError as exc:
            raise RPCError(f"{name}: config is not valid JSON: {exc}") from exc
        if not isinstance(config, dict):
            raise RPCError(f"{name}: config must be a JSON object")
        try:
            plugin = self.module.plugin_class(config)
        except ConfigError as exc:
            log.error("%s: invalid config: %s", name, exc)
            raise RPCError(f"invalid config for plugin {name}: {exc}") from exc
        except Exception as exc:
            log.error("%s: Plugin.__init__ raised\n%s", name, traceback.format_exc())
            raise RPCError(f"{name}: failed to start instance: {type(exc).__name__}: {exc}") from exc
        failure_mode = getattr(plugin, "failure_mode", self.module.failure_mode)
        if failure_mode not in ("open", "closed"):
            raise RPCError(f"{name}: failure_mode must be 'open' or 'closed', got {failure_mode!r}")
        instance = Instance(
            id=next(self._instance_ids),
            name=name,
            config=config,
            plugin=plugin,
            handlers={phase: getattr(plugin, phase) for phase in self.module.phases},
            failure_mode=failure_mode,
            decision_mark_key=_mark_key_of(plugin),
        )
        self.instances[instance.id] = instance
        self.last_start_instance = time.time()
        log.info("%s: instance #%d started", name, instance.id)
        return {"Name": name, "Id": instance.id, "Config": config, "StartTime": instance.start_time}

    def _instance_status(self, instance: Instance) -> dict[str, Any]:
        return {
            "Name": instance.name,
            "Id": instance.id,
            "Config": instance.config,
            "StartTime": instance.start_time,
        }

    def _instance(self, instance_id: Any) -> Instance:
        instance = self.instances.get(instance_id)
        if instance is None:
            # plugin.lua matches "no plugin instance" to restart the instance and retry.
            raise RPCError(f"no plugin instance {instance_id}")
        return instance

    def instance_status(self, instance_id: Any) -> dict[str, Any]:
        return self._instance_status(self._instance(instance_id))

    def close_instance(self, instance_id: Any) -> dict[str, Any]:
        instance = self._instance(instance_id)
        del self.instances[instance.id]
        self.last_close_instance = time.time()
        close = getattr(instance.plugin, "close", None)
        if callable(close):
            try:
                close()
            except Exception:
                log.error("%s: Plugin.close raised\n%s", instance.name, traceback.format_exc())
        return self._instance_status(instance)

    # -- events -------------------------------------------------------------------------------

    def handle_event(self, request: dict[str, Any]) -> dict[str, Any]:
        instance = self._instance(request.get("InstanceId"))
        phase = request.get("EventName")
        if phase not in instance.handlers:
            raise RPCError(f"{instance.name} has no handler for phase {phase!r}")
        instance.last_used = self.clock()
        event = Event(next(self._event_ids), instance, phase)
        self.events[event.event_id] = event
        return self._advance(event, None)

    def step(self, request: dict[str, Any]) -> dict[str, Any]:
        # The most frequent RPC of all: the common case without a helper call.
        event = self.events.get(request.get("EventId"))  # type: ignore[arg-type]
        if event is not None and event.state == _AWAITING_STEP:
            return self._advance(event, (request.get("Data"), None))
        event = self._waiting_event(request)
        if event is None:
            return {"EventId": request.get("EventId"), "Data": "ret"}
        return self._advance(event, (request.get("Data"), None))

    def step_error(self, request: dict[str, Any]) -> dict[str, Any]:
        event = self._waiting_event(request)
        if event is None:
            return {"EventId": request.get("EventId"), "Data": "ret"}
        return self._advance(event, (None, request.get("Data")))

    def _waiting_event(self, request: dict[str, Any]) -> Event | None:
        """The event a Step is for; None for one we ended on exit (its bridge loop should stop)."""
        event_id = request.get("EventId")
        event = self.events.get(event_id)  # type: ignore[arg-type]
        if event is None:
            if event_id in self._recently_closed:
                return None
            raise RPCError(f"no event {event_id} (ended or never started)")
        if event.state != _AWAITING_STEP:
            raise RPCError(f"event {event_id} is not waiting for a step")
        return event

    def _advance(self, event: Event, value: Any) -> dict[str, Any]:
        """Run ``event`` on this greenlet's behalf until its next PDK call or its end.

        ``value`` is the ``(result, error)`` of the PDK call the event waits on, None to start it.
        This is the hot path of every round trip: keep it to one clock read and one switch.
        """
        lender = getcurrent()
        worker = event.worker
        if worker is None:
            worker = event.worker = self._idle_workers.pop() if self._idle_workers else EventWorker(self)
            value = event
        if worker.parent is not lender:
            worker.parent = lender
        event.state = _RUNNING
        event.since = self.clock()
        kind, payload = worker.switch(value)
        if kind is _DONE:
            self._end(event)
            return {"EventId": event.event_id, "Data": self._data(payload)}
        if kind in TERMINAL_METHODS:
            self._unwind(event, ResponseExited())
        else:
            event.state = _AWAITING_STEP
        return {"EventId": event.event_id, "Data": {"Method": kind, "Args": payload}}

    def run_handler(self, event: Event) -> tuple[str, list[Any]] | None:
        """Run the event's handler on the current worker; the failure answer when it failed."""
        times = self.compute_times
        if times is None:
            return self._run_handler(event)
        worker = getcurrent()
        worker.waited = 0.0
        started = time.perf_counter()
        try:
            return self._run_handler(event)
        finally:
            times.record(event.phase, time.perf_counter() - started - worker.waited)

    def _run_handler(self, event: Event) -> tuple[str, list[Any]] | None:
        try:
            event.instance.handlers[event.phase](KONG)
        except (ResponseExited, EventClosed):
            return None
        except EventAbandoned:
            self.log_event_failure(event, "abandoned by Kong (no Step received)", None)
            return None
        except BaseException as exc:
            self.log_event_failure(event, "raised", exc)
            return self.failure_answer(event)
        return None

    def recycle(self, worker: EventWorker) -> bool:
        """Put a worker whose event ended back in the pool; False when the pool is full."""
        if len(self._idle_workers) >= _MAX_IDLE_WORKERS:
            return False
        self._idle_workers.append(worker)
        return True

    @staticmethod
    def _data(output: Any) -> Any:
        if output is None:
            return "ret"
        method, args = output
        return {"Method": method, "Args": args}

    def _unwind(self, event: Event, signal: BaseException) -> None:
        """End a suspended event now: its ``finally`` blocks run, further PDK calls fail fast."""
        event.closed = True
        worker = event.worker
        if worker is not None and worker.event is event:
            worker.parent = getcurrent()
            worker.throw(signal)
        self._end(event)

    def _end(self, event: Event) -> None:
        event.closed = True
        event.worker = None
        self.events.pop(event.event_id, None)
        recently_closed = self._recently_closed
        recently_closed[event.event_id] = None
        if len(recently_closed) > 4096:
            del recently_closed[next(iter(recently_closed))]  # the oldest: dicts keep insertion order

    def reap(self, hub_callback: Callable[[Callable[..., Any], Any], None]) -> int:
        """Unwind events Kong abandoned or whose handler hangs; returns how many were unwound.

        ``hub_callback(fn, arg)`` must run ``fn(arg)`` from the event loop's own greenlet, so that
        the unwinding event returns control to the loop (or to its lender) and never to the reaper.
        """
        now = self.clock()
        expired = [
            e for e in self.events.values()
            if now - e.since > (self.step_timeout if e.state == _AWAITING_STEP else self.handler_timeout)
        ]
        for event in expired:
            worker = event.worker
            if worker is None:
                self._end(event)
                continue
            if event.state == _AWAITING_STEP:
                # Its lender connection moved on long ago: the unwound worker returns to the hub.
                self._end(event)
                worker.parent = _hub_greenlet()
                hub_callback(worker.throw, EventAbandoned())
            else:
                # Still lent by a connection that waits for the answer: the handler's failure
                # behaviour is sent on that connection when the timeout unwinds it.
                event.since = now
                hub_callback(worker.throw, HandlerTimeout(f"no progress for {self.handler_timeout:g}s"))
        return len(expired)

    # -- failures -----------------------------------------------------------------------------

    def log_event_failure(self, event: Event, what: str, exc: BaseException | None) -> None:
        instance = event.instance
        action = (
            "request refused (failure_mode=closed)"
            if instance.failure_mode == "closed" and event.phase in _EXIT_PHASES
            else "request continues (failure_mode=open)"
        )
        if exc is None:
            log.error("%s: %s handler of instance #%d %s; %s",
                      instance.name, event.phase, instance.id, what, action)
            return
        log.error(
            "%s: %s handler of instance #%d %s; %s\n%s",
            instance.name, event.phase, instance.id, what, action,
            "".join(traceback.format_exception(exc)).rstrip(),
        )

    def failure_answer(self, event: Event) -> tuple[str, list[Any]] | None:
        """What Kong is told after a handler failed: nothing (continue) or a JSON 500 exit.

        A plugin that marks its decisions (``kong_plugins.marks``) and fails open gets a
        ``failed_open`` mark on its behalf: letting the request through was the operator's choice,
        which the fail-closed guard must not overrule. The mark is a PDK call on an event that has
        ended: Kong runs it, sends its Step, and :meth:`step` answers ``"ret"``.
        """
        if event.phase not in _EXIT_PHASES:
            return None
        if event.instance.failure_mode != "closed":
            key = event.instance.decision_mark_key
            if key is None:
                return None
            return ("kong.ctx.shared.set", [key, {"decision": "failed_open"}])
        body = {"message": f"{event.instance.name} could not process the request (fail-closed)"}
        return ("kong.response.exit", [_FAIL_CLOSED_STATUS, body, {"Content-Type": "application/json"}])


def _mark_key_of(plugin: Any) -> str | None:
    key = getattr(plugin, "decision_mark_key", None)
    return key if isinstance(key, str) and key else None


def _hub_greenlet() -> greenlet:
    import gevent

    hub: greenlet = gevent.get_hub()
    return hub


# -- transport --------------------------------------------------------------------------------


def serve_unix_socket(
    server: PluginServer,
    socket_path: str,
    *,
    listen_queue_size: int = 4096,
    watch_parent: bool = True,
    reap_interval: float = 1.0,
) -> None:
    """Serve ``server`` on a unix socket until SIGTERM/SIGINT or until the parent process exits.

    Expects ``gevent.monkey.patch_all()`` to have run (the CLI does it first thing).
    """
    import signal

    import gevent
    from gevent import socket as gsocket
    from gevent.server import StreamServer

    # Bind and listen under a temporary name, then rename: the socket path appears only once it
    # accepts connections (a client that sees the file never gets "connection refused").
    binding = f"{socket_path}.{os.getpid()}"
    if len(os.fsencode(binding)) > _MAX_UNIX_PATH_BYTES:
        binding = socket_path  # no room for a temporary name: bind in place
    for stale in {binding, socket_path}:
        if os.path.exists(stale):
            os.unlink(stale)
    listener = gsocket.socket(gsocket.AF_UNIX, gsocket.SOCK_STREAM)
    listener.bind(binding)
    listener.listen(listen_queue_size)
    if binding != socket_path:
        os.rename(binding, socket_path)
    pid_notice = msgpack.packb([2, "serverPid", os.getpid()])
    packer = msgpack.Packer(unicode_errors="surrogateescape")

    def handle_connection(sock: Any, _address: Any) -> None:
        # surrogateescape: header values are Lua strings sent as msgpack str and may hold bytes
        # that are not UTF-8; they must round-trip instead of killing the connection.
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, unicode_errors="surrogateescape",
                                    max_buffer_size=256 * 1024 * 1024)
        # The raw non-blocking socket and one reusable read watcher: Kong sends the next request on
        # a connection only after it has our answer, so after answering we wait first and read
        # once, instead of gevent's generic recv (a failing recv, an exception and a fresh wait
        # per message) -- this is most of what separates us from the bare floor server.
        raw = sock._sock
        recv_into, send = raw.recv_into, raw.send
        # One receive buffer per connection: recv(n) would allocate n bytes per message, and
        # above glibc's mmap threshold (128 KiB) that is an mmap, mremap and munmap per round trip.
        buffer = bytearray(_RECV_BUFFER_BYTES)
        view = memoryview(buffer)
        hub = gevent.get_hub()
        readable = hub.loop.io(raw.fileno(), 1)
        first = True
        try:
            while True:
                hub.wait(readable)
                received = recv_into(buffer)
                if not received:
                    return
                unpacker.feed(view[:received])
                for message in unpacker:
                    reply = packer.pack(server.dispatch(message))
                    if first:
                        # Lets Kong notice a restarted server (plugin.lua rpc_notifications).
                        reply = pid_notice + reply
                        first = False
                    try:
                        sent = send(reply)
                    except BlockingIOError:
                        sent = 0
                    if sent < len(reply):
                        sock.sendall(reply[sent:])
        except (OSError, msgpack.UnpackException, ValueError) as exc:
            log.warning("%s: connection dropped: %s", server.module.name, exc)
        finally:
            readable.close()
            sock.close()

    stream_server = StreamServer(listener, handle_connection)

    def stop(*_: Any) -> None:
        stream_server.close()

    def reaper() -> None:
        hub = gevent.get_hub()
        while True:
            gevent.sleep(reap_interval)
            server.reap(lambda fn, arg: hub.loop.run_callback(fn, arg))

    def parent_watch(original_ppid: int) -> None:
        # kong-pdk compares with 1, which misses containers whose init is a subreaper.
        while True:
            gevent.sleep(1.0)
            if os.getppid() != original_ppid:
                log.warning("%s: Kong (parent %d) is gone, exiting", server.module.name, original_ppid)
                stop()
                return

    gevent.signal_handler(signal.SIGTERM, stop)
    gevent.signal_handler(signal.SIGINT, stop)
    background = [gevent.spawn(reaper)]
    if watch_parent:
        background.append(gevent.spawn(parent_watch, os.getppid()))
    # Everything loaded so far -- the plugin module, numpy, detector tables, compiled patterns --
    # lives as long as the process. Frozen, the cyclic collector stops re-scanning it: a full
    # collection over the extraction guard's ~59,000 startup objects alone cost 12 ms, a pause
    # for every event in flight on this process; now it covers only what events made.
    gc.collect()
    gc.freeze()
    log.info("%s: serving on %s (pid %d)", server.module.name, socket_path, os.getpid())
    try:
        stream_server.serve_forever()
    finally:
        gevent.killall(background)
        if os.path.exists(socket_path):
            os.unlink(socket_path)
        if server.compute_times is not None:
            server.compute_times.close()


__all__ = ["ComputeTimes", "Event", "EventWorker", "Instance", "PluginServer", "RPCError", "serve_unix_socket"]
