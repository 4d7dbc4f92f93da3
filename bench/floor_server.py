"""The floor: a bare server that speaks Kong's plugin protocol with no plugin machinery.

It answers the same call script as ``kong_plugins/demo/hello.py`` straight from its socket loop:
HandleEvent returns the first PDK call, each Step the next one, then ``"ret"``. One thread, one
epoll loop, one reused receive buffer per connection, msgpack in and out -- what any Python plugin
server must at least spend per round trip.
A runtime's overhead in ``bench_runtime.py`` is its time minus this server's.

Run: ``python bench/floor_server.py SOCKET_PATH`` (``--dump`` prints the same info as hello.py).
"""

from __future__ import annotations

import itertools
import json
import os
import selectors
import socket
import sys
from typing import Any

import msgpack

SCHEMA = [
    {"message": {"type": "string", "default": "hello", "description": "Greeting put in the X-Hello header."}},
    {"calls": {"type": "integer", "default": 2, "between": [1, 16],
               "description": "How many PDK calls the access handler makes (benchmark knob)."}},
]
INFO = {"Name": "hello", "Phases": ["access"], "Priority": 0, "Version": "0.1.0",
        "Schema": {"name": "hello", "fields": [{"config": {"type": "record", "fields": SCHEMA}}]}}


def call_script(calls: int) -> list[dict[str, Any]]:
    script = [{"Method": "kong.request.get_header", "Args": ["host"]}]
    script += [{"Method": "kong.request.get_header", "Args": ["x-padding"]}] * (calls - 2)
    script.append({"Method": "kong.response.set_header", "Args": ["X-Hello", "hello"]})
    return script


def serve(path: str) -> None:
    instances: dict[int, list[dict[str, Any]]] = {}
    events: dict[int, tuple[list[dict[str, Any]], int]] = {}
    instance_ids = itertools.count(1)
    event_ids = itertools.count(1)

    def answer(method: str, args: list[Any]) -> Any:
        if method == "plugin.HandleEvent":
            script = instances[args[0]["InstanceId"]]
            eid = next(event_ids)
            events[eid] = (script, 1)
            return {"EventId": eid, "Data": script[0]}
        if method.startswith("plugin.Step"):
            eid = args[0]["EventId"]
            script, pos = events[eid]
            if pos == len(script):
                del events[eid]
                return {"EventId": eid, "Data": "ret"}
            events[eid] = (script, pos + 1)
            return {"EventId": eid, "Data": script[pos]}
        if method == "plugin.StartInstance":
            iid = next(instance_ids)
            config = json.loads(args[0]["Config"])
            instances[iid] = call_script(int(config.get("calls") or 2))
            return {"Name": "hello", "Id": iid, "Config": config, "StartTime": 0}
        if method == "plugin.CloseInstance":
            instances.pop(args[0], None)
            return {"Id": args[0]}
        return {"Pid": os.getpid(), "Plugins": {}}

    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4096)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    packb = msgpack.Packer().pack
    while True:
        for key, _ in selector.select():
            if key.data is None:
                conn, _ = listener.accept()
                conn.setblocking(True)
                buffer = bytearray(65536)
                selector.register(conn, selectors.EVENT_READ,
                                  (msgpack.Unpacker(raw=False, strict_map_key=False), buffer, memoryview(buffer)))
                continue
            conn = key.fileobj  # type: ignore[assignment]
            unpacker, buffer, view = key.data
            # recv_into a reused buffer: recv(n) with n above glibc's mmap threshold costs an mmap,
            # mremap and munmap per message -- not part of any floor.
            received = conn.recv_into(buffer)
            if not received:
                selector.unregister(conn)
                conn.close()
                continue
            unpacker.feed(view[:received])
            for _, msgid, method, args in unpacker:
                conn.sendall(packb([1, msgid, None, answer(method, args)]))


if __name__ == "__main__":
    if "--dump" in sys.argv:
        print(json.dumps([INFO]))
    else:
        serve(sys.argv[1])
