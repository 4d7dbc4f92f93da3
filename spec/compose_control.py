"""Acting on the compose stack from the specs: kill a plugin server, stop Redis, reset counters.

Needs the docker CLI (``docker compose`` v2 or ``docker-compose`` 1.29) on the machine that runs
the specs and the stack of ``docker/compose.yml`` up; the specs that need it skip with the reason
otherwise (the ``spec`` service of the compose file has no docker CLI: run those from the host).
``KONG_SPEC_COMPOSE`` overrides the command prefix, e.g. ``docker compose -p kong-ai -f docker/compose.yml``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "docker" / "compose.yml"
KONG_SERVICE = os.environ.get("KONG_SPEC_KONG_SERVICE", "kong")
REDIS_SERVICE = os.environ.get("KONG_SPEC_REDIS_SERVICE", "redis")

#: Runs inside the Kong container: SIGKILL every process serving PLUGIN for SECONDS, each new one
#: as soon as Kong respawns it, then print the killed pids. Matches the exact console script of the
#: plugin's start_cmd (``<venv>/bin/<plugin>``, never a --dump query); kills by pid only.
KILL_SERVER = r"""
import json, os, signal, sys, time
plugin, seconds = sys.argv[1], float(sys.argv[2])
script = os.path.join(os.environ.get("KONG_AI_VENV", "/opt/kong-ai"), "bin", plugin)
def servers():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if int(pid) != os.getpid() and script in argv[:2] and "--dump" not in argv:
            found.append(int(pid))
    return found
if seconds <= 0:
    print(json.dumps(servers()))
    sys.exit(0)
killed, deadline = [], time.monotonic() + seconds
while time.monotonic() < deadline:
    for pid in servers():
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    time.sleep(0.02)
print(json.dumps(killed))
"""


@dataclass(frozen=True)
class Compose:
    command: tuple[str, ...]

    @classmethod
    def detect(cls) -> tuple[Compose | None, str]:
        """The compose command for the running stack, or None and why not."""
        override = os.environ.get("KONG_SPEC_COMPOSE")
        if override:
            candidates = [tuple(shlex.split(override))]
        else:
            candidates = []
            if shutil.which("docker"):
                candidates.append(("docker", "compose", "-f", str(COMPOSE_FILE)))
            if shutil.which("docker-compose"):
                candidates.append(("docker-compose", "-f", str(COMPOSE_FILE)))
        if not candidates:
            return None, "needs the docker CLI (docker compose or docker-compose) on the machine running the specs"
        for command in candidates:
            compose = cls(command)
            try:
                out = compose.run("ps", "-q", KONG_SERVICE, timeout=30)
            except (OSError, subprocess.SubprocessError):
                continue
            if out.strip():
                return compose, ""
        return None, (f"the compose stack is not running here ({' '.join(candidates[0])} ps -q {KONG_SERVICE} "
                      "found no container); set KONG_SPEC_COMPOSE to the command prefix of your stack")

    def run(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run([*self.command, *args], capture_output=True, text=True, timeout=timeout, check=True)
        return done.stdout

    def exec(self, service: str, *argv: str, timeout: float = 60) -> str:
        return self.run("exec", "-T", service, *argv, timeout=timeout)

    def kill_plugin_server_popen(self, plugin: str, seconds: float) -> subprocess.Popen[str]:
        """Start keeping ``plugin``'s server dead for ``seconds`` (in the background)."""
        return subprocess.Popen(
            [*self.command, "exec", "-T", KONG_SERVICE, "/opt/kong-ai/bin/python", "-c", KILL_SERVER, plugin,
             str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def plugin_server_pids(self, plugin: str) -> list[int]:
        out = self.exec(KONG_SERVICE, "/opt/kong-ai/bin/python", "-c", KILL_SERVER, plugin, "0")
        return [int(p) for p in json.loads(out)]

    def flush_redis(self) -> None:
        self.exec(REDIS_SERVICE, "redis-cli", "FLUSHALL")

    def stop(self, service: str) -> None:
        self.run("stop", service)

    def start(self, service: str) -> None:
        self.run("start", service)
