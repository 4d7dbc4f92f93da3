"""A kong-pdk plugin module that reports what it sees, for the stand-in's protocol tests.

It runs unchanged on the stock kong-pdk 0.36 dedicated server and on our runtime. ``config.mode``
selects the behaviour, so one server serves every scenario through per-route plugin configs.
"""

import json
import os
import time

Schema = (
    {"mode": {"type": "string", "default": "observe",
              "one_of": ["observe", "exit", "error", "raise_first", "raise_after_call", "sleep_first",
                         "exit_then_call", "unknown_method", "bad_args", "big_body",
                         "serialize_in_access"]}},
    {"record_dir": {"type": "string"}},
    {"sleep": {"type": "number", "default": 0}},
    {"tag": {"type": "string"}},
    {"limits": {"type": "record", "fields": [{"max": {"type": "integer", "default": 7}},
                                             {"window": {"type": "string"}}]}},
)
version = "0.1.0"
priority = 800


class Plugin:
    def __init__(self, config):
        self.config = config

    def access(self, kong):
        mode = self.config.get("mode")
        if mode == "raise_first":
            raise RuntimeError("probe failure before any PDK call")
        if mode == "sleep_first":
            time.sleep(self.config.get("sleep") or 0)
        if mode == "exit":
            kong.response.set_header("X-Probe-Before-Exit", "1")
            kong.response.exit(403, {"message": "blocked by probe"}, {"X-Probe": "exit"})
            return
        if mode == "error":
            kong.response.error(429)
            return
        if mode == "exit_then_call":
            kong.response.exit(451, "gone")
            kong.request.get_header("x-after-exit")
            return
        if mode == "unknown_method":
            value = kong.request.does_not_exist("x")
            kong.service.request.set_header("X-Probe-Unknown", json.dumps(value))
            return
        if mode == "bad_args":
            kong.request.get_header(42)
            return
        if mode == "serialize_in_access":
            # kong.log.serialize is a log-phase function (kong/pdk/log.lua): a Lua error in access
            kong.log.serialize()
            kong.service.request.set_header("X-Probe-Serialized", "yes")
            return
        if mode == "raise_after_call":
            kong.request.get_method()
            raise RuntimeError("probe failure after a PDK call")
        headers = kong.request.get_headers()
        query = kong.request.get_query()
        if mode == "big_body":
            plain = kong.request.get_raw_body()
            sized = kong.request.get_raw_body(10 * 1024 * 1024)
            seen = {"plain": None if plain is None else len(plain),
                    "sized": None if sized is None else len(sized),
                    "type": type(sized).__name__}
        else:
            body = kong.request.get_raw_body()
            seen = {
                "headers": headers, "query": query,
                "body_type": type(body).__name__, "body_len": len(body or b""),
                "consumer": kong.client.get_consumer(),
                "route": (kong.router.get_route() or {}).get("name"),
                "ip": kong.client.get_ip(),
                "start_time": kong.request.get_start_time(),
                "config": self.config,
                "path": kong.request.get_path_with_query(),
            }
        kong.ctx.shared.set("probe", {"tag": self.config.get("tag"), "pid": os.getpid()})
        kong.service.request.set_header("X-Probe-Seen", json.dumps(seen, sort_keys=True))
        kong.response.set_header("X-Probe", "seen")

    def response(self, kong):
        if self.config.get("mode") != "observe":
            return
        body = kong.service.response.get_raw_body()
        kong.response.set_header("X-Probe-Upstream", f"{kong.service.response.get_status()} {len(body or b'')}")

    def log(self, kong):
        record_dir = self.config.get("record_dir")
        if not record_dir:
            return
        record = {
            "status": kong.response.get_status(),
            "shared": kong.ctx.shared.get("probe"),
            "serialize": json.loads(kong.log.serialize()),
            "consumer_header": kong.request.get_header("x-consumer-username"),
            "response_header": kong.response.get_header("x-probe"),
            "start": kong.nginx.req_start_time(),
        }
        name = f"{self.config.get('tag') or 'log'}-{time.monotonic_ns()}.json"
        with open(os.path.join(record_dir, name), "w") as fh:
            json.dump(record, fh)
