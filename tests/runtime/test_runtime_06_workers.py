"""Pooled event workers: reused across events, and holding nothing of an event once it ended.

Driven in-process through ``PluginServer.dispatch`` (the transport adds nothing here): the test's
own greenlet lends itself to events as a connection greenlet does.
"""

from __future__ import annotations

import gc
import json
import sys
import weakref
from pathlib import Path
from typing import Any

from kong_plugins.runtime.module import load_plugin_module
from kong_plugins.runtime.server import PluginServer

PLUGIN = '''
Schema = ()
version = "1"
priority = 1
SEEN = []


class Payload:
    """Stands for what a request carries (a body, a parsed JSON document)."""


class Plugin:
    def __init__(self, config):
        self.mode = config.get("mode", "ok")

    def access(self, kong):
        payload = Payload()
        SEEN.append(payload)  # the test keeps weak references to these
        kong.request.get_header("host")
        if self.mode == "raise":
            raise RuntimeError("boom")
        if self.mode == "exit":
            kong.response.exit(403, {"held": repr(payload)})
        kong.response.set_header("X-Done", "yes")
'''


def start(tmp_path: Path) -> tuple[PluginServer, Any, dict[str, int]]:
    path = tmp_path / "pooled.py"
    path.write_text(PLUGIN)
    module = load_plugin_module(str(path))
    server = PluginServer(module)
    ids = {}
    for mode in ("ok", "raise", "exit"):
        config = json.dumps({"mode": mode})
        answer = server.dispatch([0, 1, "plugin.StartInstance", [{"Name": "pooled", "Config": config}]])
        assert answer[2] is None, answer
        ids[mode] = answer[3]["Id"]
    return server, sys.modules["kong_plugin_pooled"], ids


def run_event(server: PluginServer, instance_id: int) -> list[Any]:
    event = {"InstanceId": instance_id, "EventName": "access"}
    _, _, err, result = server.dispatch([0, 2, "plugin.HandleEvent", [event]])
    assert err is None
    seen = [result["Data"]]
    while result["Data"] != "ret" and result["Data"]["Method"] != "kong.response.exit":
        _, _, err, result = server.dispatch([0, 3, "plugin.Step", [{"EventId": result["EventId"], "Data": "gw"}]])
        assert err is None
        seen.append(result["Data"])
    return seen


def test_workers_are_reused_and_keep_nothing_of_finished_events(tmp_path: Path) -> None:
    server, module, ids = start(tmp_path)
    for mode in ["ok", "raise", "exit"] * 20:
        outcome = run_event(server, ids[mode])
        if mode == "ok":
            assert outcome[-2:] == [{"Method": "kong.response.set_header", "Args": ["X-Done", "yes"]}, "ret"]
        elif mode == "raise":
            assert outcome[-1] == "ret"
        else:
            assert outcome[-1]["Method"] == "kong.response.exit"
    # Sequential events, whatever their ending, ran on one worker greenlet.
    assert len(server._idle_workers) == 1
    assert server.events == {}
    # Nothing of the 60 events is alive: not their payloads, not the worker's last event.
    refs = [weakref.ref(p) for p in module.SEEN]
    module.SEEN.clear()
    gc.collect()
    assert [r for r in refs if r() is not None] == []
    assert server._idle_workers[0].event is None


def test_concurrent_events_get_distinct_workers(tmp_path: Path) -> None:
    server, _, ids = start(tmp_path)
    started = [server.dispatch([0, 2, "plugin.HandleEvent", [{"InstanceId": ids["ok"], "EventName": "access"}]])[3]
               for _ in range(5)]
    assert len({id(server.events[s["EventId"]].worker) for s in started}) == 5
    for s in started:
        _, _, err, result = server.dispatch([0, 3, "plugin.Step", [{"EventId": s["EventId"], "Data": "gw"}]])
        assert err is None and result["Data"]["Args"] == ["X-Done", "yes"]
        _, _, err, result = server.dispatch([0, 4, "plugin.Step", [{"EventId": s["EventId"], "Data": None}]])
        assert err is None and result["Data"] == "ret"
    assert len(server._idle_workers) == 5 and server.events == {}
