"""Plugin I/O cooperates with the runtime's concurrency: a handler blocked in redis-py or httpx
does not stop another event of the same server from running (and releasing it).

On a server that does not make that I/O cooperative (kong-pdk's ``-g`` without monkey patching,
KONG_RUNTIME.md failure mode 4) the waiting event would hold the process and the releasing event
-- and these tests -- would hang until the hang guard.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kong_plugins.testing.redis_servers import RedisServer
from tests.runtime.raw_client import RawConnection, RawKong, running_server

PLUGIN = str(Path(__file__).parent / "plugins" / "blocking_io.py")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def held_http_server() -> Iterator[str]:
    """GET /wait answers only after GET /release arrived."""
    released = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/release":
                released.set()
                body = b"sent"
            else:
                body = b"released" if released.wait(25) else b"timed out"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def target_for(via: str, request: pytest.FixtureRequest) -> str:
    if via == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        return f"{server.host}:{server.port}"
    return str(request.getfixturevalue("held_http_server"))


@pytest.mark.parametrize("via", [pytest.param("redis", marks=pytest.mark.redis), "http"])
def test_an_event_blocked_on_io_lets_another_event_release_it(
    via: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target = target_for(via, request)
    with running_server(PLUGIN, tmp_path) as sock:
        kong = RawKong(sock)
        waiting = kong.start_instance("blocking_io", {"via": via, "role": "wait", "target": target})
        releasing = kong.start_instance("blocking_io", {"via": via, "role": "release", "target": target})
        outcome: dict[str, Any] = {}

        def run_waiting() -> None:
            conn = RawConnection(sock, timeout=30)
            try:
                outcome["wait"] = conn.call("plugin.HandleEvent", {"InstanceId": waiting, "EventName": "access"})
            finally:
                conn.close()

        thread = threading.Thread(target=run_waiting)
        thread.start()
        # The server still answers while the waiting handler is blocked in its client library...
        conn = RawConnection(sock, timeout=5)
        try:
            for _ in range(200):
                _, status = conn.call("plugin.GetStatus")
                if status["Plugins"]["blocking_io"]["EventsInFlight"] == 1:
                    break
                time.sleep(0.02)
            assert status["Plugins"]["blocking_io"]["EventsInFlight"] == 1
        finally:
            conn.close()
        # ...and runs another event to its end, which releases the first one.
        conn = RawConnection(sock, timeout=10)
        try:
            err, released = conn.call("plugin.HandleEvent", {"InstanceId": releasing, "EventName": "access"})
        finally:
            conn.close()
        assert err is None and released["Data"] == {"Method": "kong.response.set_header", "Args": ["X-IO", "sent"]}
        thread.join(30)
        err, result = outcome["wait"]
        assert err is None and result["Data"] == {"Method": "kong.response.set_header", "Args": ["X-IO", "released"]}
