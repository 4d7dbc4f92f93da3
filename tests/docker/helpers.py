"""Reading docker/Dockerfile and docker/compose.yml the way Docker does, for the checks of tests/docker."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE_FILE = REPO / "docker" / "compose.yml"
KONG_YML = REPO / "kong.yml"
INSTALL_MARKER = "# kong-ai: install"
APT_HINT = "apt-get install -y --no-install-recommends docker-compose deck"


def require_binary(name: str) -> str:
    """The path of a CI tool; a clear failure (not a skip) when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed: CI needs it for the docker/ checks ({APT_HINT})", pytrace=False)
    return path


def require_kong_yml() -> Path:
    if not KONG_YML.is_file():
        pytest.fail(f"{KONG_YML} is missing: the compose stack and these checks load the repository's kong.yml",
                    pytrace=False)
    return KONG_YML


@dataclass
class Instruction:
    keyword: str
    args: str
    comments: list[str] = field(default_factory=list)  # comment lines right above it
    stage: str = ""


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined (comment lines inside a continuation dropped)."""
    out: list[Instruction] = []
    comments: list[str] = []
    buffer: list[str] = []
    stage = ""
    for raw in text.splitlines():
        line = raw.strip()
        if buffer:
            if line.startswith("#"):
                continue
            if line.endswith("\\"):
                buffer.append(line[:-1])
                continue
            buffer.append(line)
            line, buffer = " ".join(buffer), []
        elif not line:
            comments = []
            continue
        elif line.startswith("#"):
            comments.append(line)
            continue
        elif line.endswith("\\"):
            buffer = [line[:-1]]
            continue
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            parts = args.split()
            stage = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else ""
        out.append(Instruction(keyword.upper(), args.strip(), comments, stage))
        comments = []
    return out


def substitute(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), value)


@dataclass
class Dockerfile:
    instructions: list[Instruction]
    args: dict[str, str]  # ARG defaults of the gateway stage (and global ARGs)
    env: dict[str, str]  # ENV of the gateway stage, substituted

    @classmethod
    def load(cls, path: Path = DOCKERFILE, stage: str = "gateway") -> Dockerfile:
        instructions = dockerfile_instructions(path.read_text())
        args: dict[str, str] = {}
        env: dict[str, str] = {}
        for ins in instructions:
            if ins.stage not in ("", stage):
                continue
            if ins.keyword == "ARG":
                name, _, default = ins.args.partition("=")
                args[name] = substitute(default, {**args, **env})
            elif ins.keyword == "ENV":
                for token in shlex.split(ins.args):
                    key, _, value = token.partition("=")
                    env[key] = substitute(value, {**args, **env})
        return cls(instructions, args, env)

    def marked_run(self, marker: str = INSTALL_MARKER) -> Instruction:
        marked = [i for i in self.instructions if i.keyword == "RUN" and any(c.startswith(marker) for c in i.comments)]
        assert len(marked) == 1, f"expected one RUN marked {marker!r} in {DOCKERFILE}"
        return marked[0]

    def copies_into(self, destination_var: str) -> list[tuple[list[str], str]]:
        """COPY instructions whose destination is under ${destination_var}: (sources, destination)."""
        found = []
        for ins in self.instructions:
            if ins.keyword == "COPY" and "${" + destination_var + "}" in ins.args:
                *sources, dest = ins.args.split()
                found.append((sources, dest))
        return found


@dataclass(frozen=True)
class PluginServer:
    """One pluginserver_<name>_* entry of the wiring."""

    server: str
    socket: str
    start_cmd: list[str]
    query_cmd: list[str]


def wiring(env: dict[str, str]) -> dict[str, PluginServer]:
    servers = {}
    for name in (n.strip() for n in env["KONG_PLUGINSERVER_NAMES"].split(",")):
        key = "KONG_PLUGINSERVER_" + name.upper().replace("-", "_")
        servers[name] = PluginServer(name, env[key + "_SOCKET"], shlex.split(env[key + "_START_CMD"]),
                                     shlex.split(env[key + "_QUERY_CMD"]))
    return servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rpc(path: str, method: str, args: list[Any], timeout: float = 10.0) -> Any:
    """One msgpack-RPC call as Kong makes it (kong/runloop/plugin_servers/rpc/mp_rpc.lua)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(msgpack.packb([0, 1, method, args]))
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            chunk = s.recv(65536)
            assert chunk, f"{path}: connection closed before the answer to {method}"
            unpacker.feed(chunk)
            for message in unpacker:
                if message[0] == 1:
                    return message


def serve_until_socket(argv: list[str], socket_path: str, timeout: float = 60.0,
                       env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a plugin server like Kong's start_cmd and wait until its socket answers GetStatus."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ} if env is None else env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            stop(proc)
            raise AssertionError(f"{argv} exited with {proc.returncode}: {out}")
        if os.path.exists(socket_path):
            try:
                answer = rpc(socket_path, "plugin.GetStatus", [])
            except OSError:
                pass
            else:
                assert answer[2] is None, answer
                return proc
        time.sleep(0.05)
    stop(proc)
    raise AssertionError(f"{argv} did not serve {socket_path} within {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


PYTHON = sys.executable
