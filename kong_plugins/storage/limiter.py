"""The limits engine: every limit of one request decided atomically, in one storage round trip.

Rule kinds
----------
:class:`RateRule` -- short windows ("10 per second", "100,000 tokens per minute"): at most
    ``limit`` cost units in ANY rolling ``period``, exactly. A sliding window over
    :data:`BUCKETS` buckets of ``period / BUCKETS``: a decision counts the current bucket plus the
    :data:`BUCKETS` before it, a span of at least one period, so no interval of length ``period``
    ever holds more than ``limit`` (a fixed window lets ``2 x limit`` through around its edge, a
    weighted sliding-window counter only estimates, and GCRA -- a leaky bucket whose capacity is
    the limit -- admits ``limit`` plus the drain: up to ``2 x limit - 1`` in the first period of
    sustained traffic). The price is at most one bucket of age: a unit leaves the count between
    ``period`` and ``period * (1 + 1 / BUCKETS)`` after it was consumed. State: one short string
    per rule (counts of at most ``BUCKETS + 1`` consecutive buckets), exact for costs, which gives
    exact ``remaining``, ``reset`` and ``retry_after`` and clean refunds (off the reservation's
    bucket).
:class:`CalendarRule` -- quotas per UTC hour or day ("10,000 requests per day"): the count
    restarts when the calendar window does, which is what users of daily quotas expect.
:class:`GlobalRule` -- a limit shared by several regions, each deciding on its own Redis: the
    region's own usage per time bucket plus the other regions' usage as last received by the
    region exchange (:mod:`kong_plugins.region`), which writes it into the rule's remote-usage
    hash (:attr:`GlobalRule.remote_key`). Sliding windows are those of :class:`RateRule` (the
    same buckets, the same verdict code), counted over local and remote usage: a region alone
    never over-admits; what the exchange has not delivered yet is the whole approximation (the
    bound is stated in the README ("Multi-tenant, multi-region")). Calendar windows (``"hour"``, ``"day"``)
    use one bucket per window.
:class:`ConcurrencyRule` -- requests in flight. Each admitted request holds a lease (one id per
    decision) that expires after ``lease_ttl`` seconds, so a crashed request cannot leak
    capacity; :meth:`Limiter.release` ends the leases when the request completes.

Costs: rate and calendar rules take a ``cost`` (LLM tokens: prompt estimate plus ``max_tokens``)
reserved up front; :meth:`Limiter.adjust` settles it once the real usage is known, and
:meth:`Limiter.settle` does that and the lease release in one round trip (a request's log phase).

Atomicity: one script checks every rule, then consumes from all of them or from none, so a
request denied by one rule consumes nothing elsewhere; no read-then-write happens outside it, so
N processes racing on one key admit exactly ``limit``. On Redis the script reads the server
clock; the memory backend uses the ``now`` passed in (Kong's request start time), so replays
reproduce decisions.

Keys of one call must share a Cluster slot: build them with one ``hash_tag``
(:func:`~kong_plugins.storage.keys.make_key`); otherwise every backend raises
:class:`~kong_plugins.storage.keys.CrossSlotError`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, cast

from .base import Storage
from .keys import remote_key_of
from .scripting import MemoryState, Script, ScriptArg, register_script

_RATE, _CALENDAR, _CONCURRENCY, _GLOBAL, _GLOBAL_CALENDAR = 1, 2, 3, 4, 5
#: Buckets a sliding window (rate rules, global sliding windows) is cut into; the Lua scripts
#: carry the same constant. 20: a unit leaves the count at most 5% of a period late.
BUCKETS = 20
#: The name the region exchange knows it by.
GLOBAL_BUCKETS = BUCKETS
_US = 1_000_000
CALENDAR_UNITS: dict[str, int] = {"hour": 3600, "day": 86400}


def _check_common(name: str, key: str, limit: int) -> None:
    if not name:
        raise ValueError("a rule needs a name")
    if not key:
        raise ValueError(f"rule {name!r} needs a key")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"rule {name!r}: limit must be an integer >= 1, got {limit!r}")


def _window_us(seconds: float) -> int:
    """A sliding window's period in microseconds, rounded up to whole buckets: the window the
    scripts count then spans at least ``seconds`` (rounding down would under-count by a few us)."""
    period_us = max(1, round(seconds * _US))
    return -(-period_us // BUCKETS) * BUCKETS


def _check_cost(name: str, cost: int) -> None:
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
        raise ValueError(f"rule {name!r}: cost must be an integer >= 0, got {cost!r}")


@dataclass(frozen=True, slots=True)
class RateRule:
    """At most ``limit`` cost units in any rolling ``period`` seconds (a sliding window)."""

    name: str
    key: str
    limit: int
    period: float
    cost: int = 1
    wire: tuple[int, int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_common(self.name, self.key, self.limit)
        _check_cost(self.name, self.cost)
        if not (self.period > 0 and math.isfinite(self.period)):
            raise ValueError(f"rule {self.name!r}: period must be a positive number of seconds")
        # Script arguments, computed once per rule rather than once per decision.
        object.__setattr__(self, "wire", (_RATE, self.limit, _window_us(self.period), self.cost))



@dataclass(frozen=True, slots=True)
class CalendarRule:
    """At most ``limit`` cost units per UTC calendar ``unit`` (hour or day)."""

    name: str
    key: str
    limit: int
    unit: Literal["hour", "day"]
    cost: int = 1
    wire: tuple[int, int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_common(self.name, self.key, self.limit)
        _check_cost(self.name, self.cost)
        if self.unit not in CALENDAR_UNITS:
            raise ValueError(f"rule {self.name!r}: unit must be one of {sorted(CALENDAR_UNITS)}")
        object.__setattr__(self, "wire", (_CALENDAR, self.limit, CALENDAR_UNITS[self.unit] * _US, self.cost))



@dataclass(frozen=True, slots=True)
class GlobalRule:
    """At most ``limit`` cost units per ``window`` across regions (usage exchanged asynchronously).

    ``window`` is a period in seconds (sliding, at least 0.02 s) or a UTC calendar unit
    (``"hour"``, ``"day"``). ``remote_key`` is where the region exchange writes the other regions'
    usage; it shares ``key``'s hash tag. ``group`` names the rule across lanes and regions for the
    exchange (the lane-independent key; ``key`` itself when the rule is not split into lanes).
    """

    name: str
    key: str
    limit: int
    window: float | Literal["hour", "day"]
    cost: int = 1
    group: str = ""
    wire: tuple[int, int, int, int] = field(init=False, repr=False, compare=False)
    remote_key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_common(self.name, self.key, self.limit)
        _check_cost(self.name, self.cost)
        if isinstance(self.window, str):
            if self.window not in CALENDAR_UNITS:
                raise ValueError(f"rule {self.name!r}: window must be seconds or one of {sorted(CALENDAR_UNITS)}")
            wire = (_GLOBAL_CALENDAR, self.limit, CALENDAR_UNITS[self.window] * _US, self.cost)
        else:
            if not (self.window >= 0.02 and math.isfinite(self.window)):
                raise ValueError(f"rule {self.name!r}: a sliding global window must be at least 0.02 seconds")
            wire = (_GLOBAL, self.limit, _window_us(self.window), self.cost)
        object.__setattr__(self, "wire", wire)
        object.__setattr__(self, "remote_key", remote_key_of(self.key))
        if not self.group:
            object.__setattr__(self, "group", self.key)

    def bucket_width_us(self) -> int:
        """Length of one usage bucket in microseconds (the unit the exchange ships)."""
        kind, _, param, _ = self.wire
        return param // BUCKETS if kind == _GLOBAL else param


@dataclass(frozen=True, slots=True)
class ConcurrencyRule:
    """At most ``limit`` requests in flight; a lease not released expires after ``lease_ttl`` s."""

    name: str
    key: str
    limit: int
    lease_ttl: float
    wire: tuple[int, int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_common(self.name, self.key, self.limit)
        if not (self.lease_ttl > 0 and math.isfinite(self.lease_ttl)):
            raise ValueError(f"rule {self.name!r}: lease_ttl must be a positive number of seconds")
        object.__setattr__(self, "wire", (_CONCURRENCY, self.limit, max(1, round(self.lease_ttl * _US)), 1))

    @property
    def cost(self) -> int:
        return 1



Rule = RateRule | CalendarRule | ConcurrencyRule | GlobalRule


class RuleState(NamedTuple):
    """One rule's verdict. Seconds are floats; ``remaining`` is after this request's cost when
    allowed. ``reset_after``: until the rule is back to full capacity (sliding windows: until the
    newest usage has left the window), until the window ends (calendar), until the oldest held
    lease expires (concurrency). ``retry_after`` is 0 when the rule allowed; when it denied, the
    earliest time a request of this cost fits if nothing else is consumed meanwhile; for a cost
    above the limit (it can never fit) it is ``reset_after``."""

    rule: Rule
    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float


class Reservation(NamedTuple):
    """What :meth:`Limiter.adjust` and :meth:`Limiter.release` need to settle an admitted request.

    Plain data (rules, a lease id, the bucket or calendar window each cost went to): keep it for
    the log phase. Verdicts are named tuples: made on every request, they cost a third of a
    frozen dataclass.
    """

    rules: tuple[Rule, ...]
    lease_id: str
    windows: tuple[int, ...]


class LimitDecision(NamedTuple):
    """The outcome of :meth:`Limiter.check_and_consume`.

    ``denied_by`` is the first rule (in the order given) that denied; ``retry_after`` the longest
    wait among denying rules (0 when allowed); ``reservation`` is set when allowed.
    """

    allowed: bool
    states: tuple[RuleState, ...]
    denied_by: Rule | None
    retry_after: float
    reservation: Reservation | None


# -- Python twins (memory backend). The Lua scripts in scripts/limiter*.lua mirror these lines. --


def _slide(
    buckets: Sequence[int], counts: Sequence[int], used: int, limit: int, cost: int, at: int, width: int,
    span: int, now: int,
) -> tuple[int, int, int, int]:
    """The verdict of a sliding window (kinds 1 and 4), ``slide`` in limiter.lua: (ok, remaining,
    reset, retry). ``buckets`` (ascending) hold ``counts``, every bucket still in the window;
    ``used`` is their sum; an admitted cost goes to bucket ``at``; a bucket leaves the window
    ``span`` after it began."""
    top = len(counts)
    while top and not counts[top - 1]:
        top -= 1
    newest = buckets[top - 1] if top else None
    if used + cost <= limit:
        if cost > 0 and (newest is None or at > newest):
            newest = at
        if newest is None:
            return 1, limit - used - cost, 0, 0
        return 1, limit - used - cost, newest * width + span - now, 0
    reset = newest * width + span - now if newest is not None else 0
    if cost <= limit:
        freed = 0
        for j in range(top):
            freed += counts[j]
            if used - freed + cost <= limit:
                return 0, limit - used, reset, buckets[j] * width + span - now
    return 0, limit - used, reset, reset


def _rate_state(entry: tuple[int, list[int]] | None, cur: int) -> tuple[int, list[int], int]:
    """(first bucket, counts from it, their sum) of a rate rule's state still in the window at
    bucket ``cur``: buckets below ``cur - BUCKETS`` have left, leading empty ones are dropped (as
    limiter.lua parses its string). The stored list is never modified."""
    if entry is None:
        return cur, [], 0
    first, counts = entry
    skip = cur - BUCKETS - first
    if skip < 0:
        skip = 0
    if skip or not counts or not counts[0]:
        n = len(counts)
        while skip < n and not counts[skip]:
            skip += 1
        if skip >= n:
            return cur, [], 0
        first += skip
        counts = counts[skip:]
    return first, counts, sum(counts)


def _rate_charge(first: int, counts: list[int], at: int, cost: int) -> list[int]:
    """A copy of ``counts`` (from bucket ``first``) with ``cost`` added to bucket ``at`` >= first."""
    j = at - first
    new = counts.copy()
    if j < len(new):
        new[j] += cost
    else:
        new += [0] * (j - len(new))
        new.append(cost)
    return new


def _expiry(now: int, until: int) -> int:
    """When a key whose content matters for ``until`` more us expires: one second of margin, as
    the scripts' ``PX ceil(until / 1000) + 1000``."""
    return now + (-(-until // 1000) + 1000) * 1000


def _global_window(kind: int, param: int, now: int) -> tuple[int, int, int, int]:
    """(bucket width, current bucket, lowest bucket in the window, span) of a global rule, in us."""
    if kind == _GLOBAL:
        width = param // BUCKETS
        cur = now // width
        return width, cur, cur - BUCKETS, (BUCKETS + 1) * width
    cur = now // param
    return param, cur, cur, param


def _global_check(
    state: MemoryState, key: str, remote_key: str, kind: int, limit: int, param: int, cost: int, now: int
) -> tuple[int, int, int, int, int, tuple[str, object, int, int] | None]:
    """Kinds 4 and 5 of the check script: (ok, remaining, reset, retry, window, write or None)."""
    width, cur, lo, span = _global_window(kind, param, now)
    local: dict[int, int] = state.get(key) or {}
    remote: dict[int, int] = state.get(remote_key) or {}
    per: dict[int, int] = {}
    used = 0
    for bucket, count in local.items():
        if bucket >= lo:
            per[bucket] = per.get(bucket, 0) + count
            used += count
    for bucket, count in remote.items():
        if bucket >= lo:
            per[bucket] = per.get(bucket, 0) + count
            used += count
    buckets = sorted(per)
    ok, remaining, reset, retry = _slide(buckets, [per[b] for b in buckets], used, limit, cost, cur, width,
                                         span, now)
    write = None
    if ok and cost > 0:
        kept = {bucket: count for bucket, count in local.items() if bucket >= lo}
        kept[cur] = kept.get(cur, 0) + cost
        write = (key, kept, _expiry(now, cur * width + span - now), 0)
    return ok, remaining, reset, retry, cur, write


def _check_twin(state: MemoryState, keys: Sequence[str], args: Sequence[ScriptArg], now: int) -> list[int]:
    # Hot path of the memory backend (100,000+ decisions/s): locals instead of helpers.
    lease = str(args[0])
    # Only Limiter calls this twin, always with ints (Lua gets their text): no per-value parsing.
    a = cast("Sequence[int]", args)
    reply: list[int] = []
    # (key, new value, key expiry in us, lease expiry in us or 0 for non-lease rules)
    writes: list[tuple[str, object, int, int]] = []
    all_ok = True
    b = 1
    n = (len(a) - 1) // 4
    remote_index = n
    for i in range(n):
        key = keys[i]
        kind, limit, param, cost = a[b], a[b + 1], a[b + 2], a[b + 3]
        b += 4
        ok, remaining, reset, retry, window = 0, 0, 0, 0, 0
        if kind == _RATE:
            width = param // BUCKETS
            span = width + param
            cur = now // width
            first, counts, used = _rate_state(state.get(key), cur)
            at = window = first if first > cur else cur
            if used + cost <= limit:
                # allowed: slide()'s first branch, inline (counts end with a non-empty bucket)
                ok = 1
                remaining = limit - used - cost
                top = len(counts)
                while top and not counts[top - 1]:
                    top -= 1
                newest = first + top - 1 if top else -1
                if cost > 0:
                    if at > newest:
                        newest = at
                    reset = newest * width + span - now
                    writes.append((key, (first, _rate_charge(first, counts, at, cost)), _expiry(now, reset), 0))
                elif top:
                    reset = newest * width + span - now
            else:
                ok, remaining, reset, retry = _slide(range(first, first + len(counts)), counts, used, limit, cost,
                                                     at, width, span, now)
        elif kind == _CALENDAR:
            window = now // param
            entry = state.get(key)
            used = entry[1] if entry is not None and entry[0] == window else 0
            reset = (window + 1) * param - now
            if used + cost <= limit:
                ok = 1
                remaining = limit - used - cost
                writes.append((key, (window, used + cost), _expiry(now, reset), 0))
            else:
                remaining = limit - used
                retry = reset
        elif kind >= _GLOBAL:
            remote = keys[remote_index]
            remote_index += 1
            ok, remaining, reset, retry, window, write = _global_check(state, key, remote, kind, limit, param,
                                                                       cost, now)
            if write is not None:
                writes.append(write)
        else:
            leases: dict[str, int] | None = state.get(key)
            if leases:
                for held in [k for k, exp in leases.items() if exp <= now]:
                    del leases[held]
            count = len(leases) if leases else 0
            if leases:
                reset = min(leases.values()) - now
            if count + 1 <= limit:
                ok = 1
                remaining = limit - count - 1
                writes.append((key, None, _expiry(now, param), now + param))
            else:
                remaining = limit - count
                retry = reset
        if remaining < 0:
            remaining = 0
        if not ok:
            all_ok = False
        reply += (ok, remaining, reset, retry, window)
    if all_ok:
        for key, value, expires, lease_expires in writes:
            if lease_expires:
                leases = state.get(key) or {}
                leases[lease] = lease_expires
                value = leases
            state.set(key, value, expires)
    return reply


def _adjust_twin(state: MemoryState, keys: Sequence[str], args: Sequence[ScriptArg], now: int) -> int:
    released = 0
    for i, key in enumerate(keys):
        b = i * 5
        kind, param = int(args[b]), int(args[b + 2])
        if kind == _CONCURRENCY:
            released += _release_twin(state, [key], [args[b + 4]], now)
            continue
        delta, reserved = int(args[b + 3]), int(args[b + 4])
        if delta == 0:
            continue
        if kind == _RATE:
            width = param // BUCKETS
            cur = now // width
            first, counts, _ = _rate_state(state.get(key), cur)
            if delta > 0:
                counts = _rate_charge(first, counts, first if first > cur else cur, delta)
            elif first <= reserved < first + len(counts) and counts[reserved - first] > 0:
                counts = counts.copy()
                counts[reserved - first] = max(0, counts[reserved - first] + delta)
            else:
                continue
            top = len(counts)
            while top and not counts[top - 1]:
                top -= 1
            skip = 0
            while skip < top and not counts[skip]:
                skip += 1
            if not top:
                state.delete(key)
            else:
                newest = first + top - 1
                state.set(key, (first + skip, counts[skip:top]), _expiry(now, newest * width + width + param - now))
        elif kind >= _GLOBAL:
            width, cur, lo, span = _global_window(kind, param, now)
            local: dict[int, int] = state.get(key) or {}
            if delta > 0:
                local[cur] = local.get(cur, 0) + delta
                state.set(key, local, now + (math.ceil((cur * width + span - now) / 1000) + 1000) * 1000)
            elif reserved >= lo and local.get(reserved, 0) > 0:
                local[reserved] -= min(-delta, local[reserved])
                state.set(key, local, state.expires_at(key))
        elif kind == _CALENDAR:
            current = now // param
            if reserved == current or delta > 0:
                entry = state.get(key)
                used = entry[1] if entry is not None and entry[0] == current else 0
                used = max(0, used + delta)
                expires = now + (math.ceil(((current + 1) * param - now) / 1000) + 1000) * 1000
                state.set(key, (current, used), expires)
    return released


def _release_twin(state: MemoryState, keys: Sequence[str], args: Sequence[ScriptArg], now: int) -> int:
    lease = str(args[0])
    released = 0
    for key in keys:
        leases: dict[str, int] | None = state.get(key)
        if not leases:
            continue
        for held in [k for k, exp in leases.items() if exp <= now]:
            del leases[held]
        if leases.pop(lease, None) is not None:
            released += 1
    return released


_PKG = "kong_plugins.storage"
CHECK_AND_CONSUME = register_script(
    Script.from_package(_PKG, "scripts/limiter.lua", _check_twin, name="kp.limiter.check",
                        prelude=("scripts/rate_state.lua",))
)
ADJUST = register_script(
    Script.from_package(_PKG, "scripts/limiter_adjust.lua", _adjust_twin, name="kp.limiter.adjust",
                        prelude=("scripts/rate_state.lua",))
)
RELEASE = register_script(
    Script.from_package(_PKG, "scripts/limiter_release.lua", _release_twin, name="kp.limiter.release")
)


def _new_lease_id() -> str:
    return uuid.uuid4().hex


class Limiter:
    """Decides requests against rules on one :class:`~kong_plugins.storage.base.Storage`."""

    def __init__(
        self,
        storage: Storage,
        lease_ids: Callable[[], str] = _new_lease_id,
        *,
        on_global_usage: Callable[[Sequence[GlobalRule]], None] | None = None,
    ) -> None:
        """``on_global_usage`` is told, after the storage call, which :class:`GlobalRule` s an
        admitted decision or an adjustment changed (the region exchange's journal); it must be
        cheap and must not do I/O."""
        self.storage = storage
        self._lease_ids = lease_ids
        self._on_global_usage = on_global_usage

    def check_and_consume(self, rules: Sequence[Rule], now: float | None = None) -> LimitDecision:
        """Decide ``rules`` for one request and consume from all of them, or from none.

        ``now`` (seconds since the epoch, Kong's request start time) is used by the memory
        backend; Redis backends use the server's clock. Raises ``StorageError`` when the storage
        fails, ``CrossSlotError`` when the keys do not share a slot, ``ValueError`` for
        duplicate rule names or keys.
        """
        # The hot path of every request (on Redis the only work besides the round trip): no
        # per-rule helper calls, one pass to build the arguments, one to read the reply.
        if type(rules) is not tuple:
            rules = tuple(rules)
        n = len(rules)
        if not n:
            return LimitDecision(True, (), None, 0.0, Reservation((), "", ()))
        keys = [rule.key for rule in rules]
        args: list[ScriptArg] = [""]
        has_lease = False
        global_rules: list[GlobalRule] | None = None
        for rule in rules:
            wire = rule.wire
            args += wire
            if wire[0] >= _CONCURRENCY:
                if wire[0] == _CONCURRENCY:
                    has_lease = True
                else:
                    if global_rules is None:
                        global_rules = []
                    global_rules.append(cast(GlobalRule, rule))
        if n > 1 and (len(set(keys)) != n or len({rule.name for rule in rules}) != n):
            raise ValueError("rules of one decision need distinct names and distinct keys")
        if global_rules is not None:
            keys += [rule.remote_key for rule in global_rules]
        lease_id = ""
        if has_lease:
            lease_id = args[0] = self._lease_ids()
        reply = self.storage.run(CHECK_AND_CONSUME, keys, args, now)
        # reply: (allowed, remaining, reset us, retry us, window) per rule, integers on every
        # backend. tuple.__new__ builds each RuleState without the named-tuple constructor's
        # argument handling (a quarter of the cost of reading the reply).
        new_state = tuple.__new__
        if 0 not in reply[::5]:
            states = tuple([new_state(RuleState, (rule, True, rule.limit, reply[b + 1], reply[b + 2] / _US, 0.0))
                            for rule, b in zip(rules, range(0, 5 * n, 5), strict=True)])
            if global_rules is not None and self._on_global_usage is not None:
                self._on_global_usage(global_rules)
            return LimitDecision(True, states, None, 0.0, Reservation(rules, lease_id, tuple(reply[4::5])))
        denied: list[RuleState] = []
        b = 0
        for rule in rules:
            denied.append(new_state(RuleState, (rule, reply[b] == 1, rule.limit, reply[b + 1], reply[b + 2] / _US,
                                                reply[b + 3] / _US)))
            b += 5
        denied_by = next(state.rule for state in denied if not state.allowed)
        retry_after = max(state.retry_after for state in denied)
        return LimitDecision(False, tuple(denied), denied_by, retry_after, None)

    def adjust(
        self, reservation: Reservation, deltas: Mapping[str, int], now: float | None = None
    ) -> None:
        """Settle reserved costs: ``deltas`` maps rule names to ``actual - reserved``.

        A negative delta refunds (never below an empty bucket / zero usage), a positive one
        charges extra, possibly beyond the limit: later requests then wait until it is paid off.
        Unknown names raise ``ValueError``; concurrency rules cannot be adjusted.
        """
        by_name = {rule.name: (i, rule) for i, rule in enumerate(reservation.rules)}
        keys: list[str] = []
        args: list[ScriptArg] = []
        for name, delta in deltas.items():
            if name not in by_name:
                raise ValueError(f"no rule named {name!r} in this reservation")
            i, rule = by_name[name]
            if isinstance(rule, ConcurrencyRule):
                raise ValueError(f"rule {name!r} counts requests in flight: release it instead")
            if delta == 0:
                continue
            keys.append(rule.key)
            args.extend(rule.wire[:3])
            args.extend((int(delta), reservation.windows[i]))
        if keys:
            self.storage.run(ADJUST, keys, args, now)
            if self._on_global_usage is not None:
                changed = [r for r in reservation.rules if isinstance(r, GlobalRule) and deltas.get(r.name)]
                if changed:
                    self._on_global_usage(changed)

    def settle(
        self, reservation: Reservation, deltas: Mapping[str, int], now: float | None = None
    ) -> int:
        """:meth:`adjust` and :meth:`release` in one storage round trip (one script): what a
        request's log phase does. Returns how many leases were still held."""
        by_name = {rule.name: (i, rule) for i, rule in enumerate(reservation.rules)}
        for name in deltas:
            if name not in by_name:
                raise ValueError(f"no rule named {name!r} in this reservation")
            if isinstance(by_name[name][1], ConcurrencyRule):
                raise ValueError(f"rule {name!r} counts requests in flight: it is released, not adjusted")
        keys: list[str] = []
        args: list[ScriptArg] = []
        for i, rule in enumerate(reservation.rules):
            if isinstance(rule, ConcurrencyRule):
                keys.append(rule.key)
                args.extend((*rule.wire[:3], 0, reservation.lease_id))
            elif deltas.get(rule.name):
                keys.append(rule.key)
                args.extend((*rule.wire[:3], int(deltas[rule.name]), reservation.windows[i]))
        if not keys:
            return 0
        released = int(self.storage.run(ADJUST, keys, args, now))
        if self._on_global_usage is not None:
            changed = [r for r in reservation.rules if isinstance(r, GlobalRule) and deltas.get(r.name)]
            if changed:
                self._on_global_usage(changed)
        return released

    def release(self, reservation: Reservation, now: float | None = None) -> int:
        """End the reservation's concurrency leases; how many were still held."""
        keys = [rule.key for rule in reservation.rules if isinstance(rule, ConcurrencyRule)]
        if not keys:
            return 0
        return int(self.storage.run(RELEASE, keys, [reservation.lease_id], now))


__all__ = [
    "ADJUST",
    "BUCKETS",
    "CALENDAR_UNITS",
    "CHECK_AND_CONSUME",
    "GLOBAL_BUCKETS",
    "RELEASE",
    "CalendarRule",
    "ConcurrencyRule",
    "GlobalRule",
    "LimitDecision",
    "Limiter",
    "RateRule",
    "Reservation",
    "Rule",
    "RuleState",
]
