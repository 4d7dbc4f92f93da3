"""``match`` is a Lua pattern in Kong: our translation must accept exactly what Lua's string.match accepts.

Differential test against a real Lua 5.1 interpreter (LuaJIT, Kong's VM, follows 5.1 pattern rules)
embedded through ``lupa``.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kong_plugins import schema as s

lua51 = pytest.importorskip("lupa.lua51", reason="lupa provides the reference Lua interpreter")
LUA = lua51.LuaRuntime()
lua_match = LUA.eval("function(v, p) return string.find(v, p) ~= nil end")


def ours(value: str, pattern: str) -> bool:
    return s.compile_lua_pattern(pattern).search(value) is not None


@pytest.mark.parametrize(("pattern", "value", "expected"), [
    ("^[%w_-]+$", "gold_tier-1", True),
    ("^[%w_-]+$", "gold tier", False),
    ("^%d+$", "123", True),
    ("^%d+$", "12a", False),
    ("%.", "a.b", True),
    ("%.", "ab", False),
    ("^a.-b$", "axxb", True),
    ("^[^%s]+$", "no-space", True),
    ("^[^%s]+$", "has space", False),
    ("^https?://", "http://x", True),
    ("^%u%l+$", "Hello", True),
    ("a$b", "a$b", True),
])
def test_known_patterns_behave_as_in_lua(pattern: str, value: str, expected: bool) -> None:
    assert lua_match(value, pattern) is expected
    assert ours(value, pattern) is expected


ATOMS = ["a", "b", "-", ".", "%d", "%a", "%w", "%s", "%p", "%l", "%u", "%x", "%D", "%W", "%.", "%%", "%-",
         "[ab]", "[^ab]", "[a-c]", "[%d_]", "[]a]", "[%a-]", "$"]
pieces = st.tuples(st.sampled_from(ATOMS), st.sampled_from(["", "", "*", "+", "-", "?"])).map("".join)
patterns = st.builds(
    lambda anchor, body, end: anchor + "".join(body) + end,
    st.sampled_from(["", "^"]), st.lists(pieces, min_size=1, max_size=4), st.sampled_from(["", "$"]),
)
values = st.text(alphabet="ab-c1_ .%$]Z\n", max_size=8)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patterns, values)
def test_translation_agrees_with_lua_on_generated_patterns(pattern: str, value: str) -> None:
    assert ours(value, pattern) is lua_match(value, pattern)
