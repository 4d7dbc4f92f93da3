"""Scripts: the Lua and its Python twin decide alike; NOSCRIPT is survived; plugins add their own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kong_plugins.storage import (
    REGISTRY,
    CalendarRule,
    ConcurrencyRule,
    Limiter,
    MemoryState,
    MemoryStorage,
    RateRule,
    Script,
    ScriptArg,
    make_key,
    register_script,
)
from kong_plugins.storage.scripting import ScriptRegistry
from kong_plugins.testing.redis_servers import RedisServer

from .conftest import Backend, FakeClock


def _max_twin(state: MemoryState, keys: Sequence[str], args: Sequence[ScriptArg], now_us: int) -> int:
    current = state.get(keys[0])
    best = max(int(current or 0), int(args[0]))
    state.set(keys[0], str(best), None)
    return best


# What a plugin does: its own Lua text (normally package data) and twin, registered explicitly.
KEEP_MAX = Script(
    name="tests.keep_max",
    lua="local v = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), tonumber(ARGV[1]))\n"
        "redis.call('SET', KEYS[1], v)\nreturn v\n",
    twin=_max_twin,
)


def test_a_plugin_script_runs_on_every_backend(backend: Backend) -> None:
    key = make_key("test-scripts", "max")
    results = [backend.storage.run(KEEP_MAX, [key], [n], backend.now()) for n in (3, 9, 4)]
    assert results == [3, 9, 9]
    assert backend.storage.get(key, backend.now()) == "9"


def test_redis_script_cache_loss_is_survived(redis_backend: Backend, request: pytest.FixtureRequest) -> None:
    key = make_key("test-scripts", "flushed")
    assert redis_backend.storage.incr(key) == 1
    # a restart or failover empties the script cache: the next EVALSHA meets NOSCRIPT
    if redis_backend.kind == "redis":
        processes = [request.getfixturevalue("redis_server").process]
    elif redis_backend.kind == "redis-cluster":
        processes = request.getfixturevalue("redis_cluster").processes
    else:
        processes = [request.getfixturevalue("redis_sentinel").master]
    for process in processes:
        with process.client() as client:
            client.script_flush()
    assert redis_backend.storage.incr(key) == 2
    assert redis_backend.storage.incr(key) == 3


def test_registry_is_explicit_and_refuses_a_different_script_under_a_used_name() -> None:
    registry = ScriptRegistry()
    registry.register(KEEP_MAX)
    registry.register(KEEP_MAX)  # the same script again is harmless
    with pytest.raises(ValueError, match=r"tests\.keep_max"):
        registry.register(Script("tests.keep_max", "return 1", _max_twin))
    assert registry.get("tests.keep_max") is KEEP_MAX
    assert {s.name for s in REGISTRY.all()} >= {"kp.limiter.check", "kp.limiter.adjust", "kp.limiter.release"}
    assert register_script(KEEP_MAX) is KEEP_MAX


def test_built_in_scripts_are_package_data() -> None:
    for script in REGISTRY.all():
        if script.name.startswith("kp."):
            assert script.lua.lstrip().startswith("--"), script.name  # the .lua file, not a Python string
            assert len(script.sha) == 40


# -- Lua and twin parity -------------------------------------------------------------------------

TAG = "parity"
RULES = {
    "rate": lambda cost: RateRule("rate", make_key("parity", "rate", hash_tag=TAG), 12, 3600, cost=cost),
    "daily": lambda cost: CalendarRule("daily", make_key("parity", "daily", hash_tag=TAG), 15, "day", cost=cost),
    "slots": lambda cost: ConcurrencyRule("slots", make_key("parity", "slots", hash_tag=TAG), 4, 3600),
}
step = st.tuples(
    st.sampled_from(["check", "adjust", "release"]),
    st.lists(st.sampled_from(sorted(RULES)), min_size=1, max_size=3, unique=True),
    st.integers(0, 6),
    st.integers(-5, 5),
)


def replay(limiter: Limiter, steps: list[tuple[str, list[str], int, int]], now: float | None) -> list[Any]:
    """Run a request sequence; report what a user sees (verdicts and remaining counts)."""
    seen: list[Any] = []
    reservations = []
    for action, names, cost, delta in steps:
        if action == "check" or not reservations:
            d = limiter.check_and_consume([RULES[n](cost) for n in names], now)
            seen.append((d.allowed, d.denied_by.name if d.denied_by else None,
                         [(s.rule.name, s.allowed, s.remaining) for s in d.states]))
            if d.reservation is not None:
                reservations.append(d.reservation)
        elif action == "adjust":
            reservation = reservations[-1]
            deltas = {r.name: delta for r in reservation.rules if not isinstance(r, ConcurrencyRule)}
            limiter.adjust(reservation, deltas, now)
        else:
            seen.append(("released", limiter.release(reservations.pop(0), now)))
    return seen


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(step, min_size=1, max_size=25))
def test_lua_and_python_twin_decide_alike(redis_server: RedisServer, steps: list[Any]) -> None:
    """Periods of an hour make the few milliseconds Redis's clock moves meanwhile irrelevant."""
    from kong_plugins.storage import build_storage

    redis_server.flush()
    on_redis = replay(Limiter(build_storage({"strategy": "redis", "host": redis_server.host,
                                             "port": redis_server.port})), steps, None)
    clock = FakeClock()
    on_memory = replay(Limiter(MemoryStorage(clock=clock)), steps, clock.now)
    assert on_redis == on_memory
