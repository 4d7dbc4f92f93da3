"""A kong-pdk plugin whose handler blocks on real network I/O until another event releases it.

config.via picks the I/O: ``redis`` (BLPOP / RPUSH with redis-py) or ``http`` (httpx GETs against
a test server that holds ``/wait`` until ``/release`` is called). config.role: ``wait`` or ``release``.
"""

import httpx
import redis

Schema = (
    {"via": {"type": "string", "description": "redis or http: which client library blocks."}},
    {"role": {"type": "string", "description": "wait: block until released; release: release."}},
    {"target": {"type": "string", "description": "host:port of the Redis or HTTP test server."}},
)
version = "1.0.0"
priority = 10


class Plugin:
    def __init__(self, config):
        self.via, self.role = config["via"], config["role"]
        host, port = config["target"].rsplit(":", 1)
        self.redis = redis.Redis(host=host, port=int(port), socket_timeout=30)
        self.base = f"http://{host}:{port}"

    def access(self, kong):
        if self.via == "redis":
            if self.role == "wait":
                item = self.redis.blpop("blocking-io", timeout=25)
                got = item[1].decode() if item else "timed out"
            else:
                self.redis.rpush("blocking-io", "released")
                got = "sent"
        else:
            got = httpx.get(f"{self.base}/{self.role}", timeout=25).text
        kong.response.set_header("X-IO", got)
