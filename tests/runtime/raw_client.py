"""A raw Kong-side protocol client for runtime tests that need to misbehave on purpose.

The stand-in (kong_plugins.standin) is faithful to Kong; these tests also need what Kong does only
when things go wrong: abandoning an event, a Step for an unknown event, many events interleaved by
hand on separate connections.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack

_ids = itertools.count(1)


class RawConnection:
    """One unix-socket connection speaking [0, id, method, args] -> [1, id, err, result]."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.notifications: list[Any] = []

    def send(self, method: str, *args: Any) -> int:
        msgid = next(_ids)
        self.sock.sendall(msgpack.packb([0, msgid, method, list(args)], use_bin_type=True))
        return msgid

    def receive(self, msgid: int) -> tuple[Any, Any]:
        while True:
            for message in self.unpacker:
                if message[0] == 2:
                    self.notifications.append(message)
                    continue
                assert message[1] == msgid, message
                return message[2], message[3]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.unpacker.feed(chunk)

    def call(self, method: str, *args: Any) -> tuple[Any, Any]:
        return self.receive(self.send(method, *args))

    def close(self) -> None:
        self.sock.close()


class RawKong:
    """Opens a fresh connection per call, as Kong's pool may."""

    def __init__(self, path: str) -> None:
        self.path = path

    def call(self, method: str, *args: Any) -> tuple[Any, Any]:
        conn = RawConnection(self.path)
        try:
            return conn.call(method, *args)
        finally:
            conn.close()

    def start_instance(self, name: str, config: dict[str, Any] | None = None) -> int:
        err, result = self.call("plugin.StartInstance", {"Name": name, "Config": json.dumps(config or {})})
        assert err is None, err
        return int(result["Id"])

    def run_event(self, instance_id: int, phase: str, answers: dict[str, Any] | None = None) -> list[Any]:
        """Run an event to its end, answering PDK calls from ``answers`` (method -> value)."""
        answers = answers or {}
        err, result = self.call("plugin.HandleEvent", {"InstanceId": instance_id, "EventName": phase})
        assert err is None, err
        calls: list[Any] = []
        while result["Data"] != "ret":
            calls.append(result["Data"])
            method = result["Data"]["Method"]
            if method in ("kong.response.exit", "kong.response.error"):
                return calls
            err, result = self.call("plugin.Step", {"EventId": result["EventId"], "Data": answers.get(method)})
            assert err is None, err
        return calls


@contextmanager
def running_server(plugin: str, prefix: Path, *extra: str, name: str | None = None) -> Iterator[str]:
    """Start ``python -m kong_plugins.runtime.cli PLUGIN`` and yield its socket path."""
    plugin_name = name or Path(plugin).stem
    socket_path = str(prefix / f"{plugin_name}.sock")
    cmd = [sys.executable, "-m", "kong_plugins.runtime.cli", plugin, "--kong-prefix", str(prefix), *extra]
    stderr = open(prefix / f"{plugin_name}.stderr", "w+b")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stderr=stderr, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(socket_path):
            if proc.poll() is not None or time.monotonic() > deadline:
                stderr.seek(0)
                raise RuntimeError(f"server did not start: {stderr.read().decode(errors='replace')}")
            time.sleep(0.02)
        yield socket_path
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        stderr.close()


def server_log(prefix: Path, plugin_name: str) -> str:
    return (prefix / f"{plugin_name}.stderr").read_text(errors="replace")


_STOCK_LAUNCHER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location({name!r}, {path!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from kong_pdk.cli import start_dedicated_server
start_dedicated_server({name!r}, module.Plugin, module.version, module.priority, list(module.Schema))
"""


@contextmanager
def running_stock_server(plugin_file: str, prefix: Path, *, gevent: bool = False) -> Iterator[str]:
    """Start the stock kong-pdk 0.36 dedicated server on the same module file."""
    name = Path(plugin_file).stem
    launcher = prefix / f"stock_{name}.py"
    launcher.write_text(_STOCK_LAUNCHER.format(name=name, path=str(Path(plugin_file).resolve())))
    socket_path = str(prefix / f"{name}.sock")
    cmd = [sys.executable, str(launcher), "-p", str(prefix), "--no-lua-style", *(["-g"] if gevent else [])]
    stderr = open(prefix / f"{name}.stderr", "w+b")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stderr=stderr, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(socket_path):
            if proc.poll() is not None or time.monotonic() > deadline:
                stderr.seek(0)
                raise RuntimeError(f"stock server did not start: {stderr.read().decode(errors='replace')}")
            time.sleep(0.02)
        yield socket_path
    finally:
        proc.kill()
        proc.wait(10)
        stderr.close()
