"""The guard: the cheap access-phase check and the log-phase learning, over injected storage.

Access (on the request path, at most 2 storage round trips):

1. one ``mget`` of ``[verdict of the client, verdict of its group, cross-tenant block of its IP,
   revoked credential]`` -- the revocation denylist is evaluated first, then blocks, then
   throttles, then flags. Every key but the cross-tenant IP block is namespaced by the caller's
   tenant (and shares the tenant's hash tag: one Cluster slot), so one tenant's traffic can never
   block, throttle or read the state of another tenant's clients -- not even behind a shared NAT
   address, whose group score is kept per tenant;
2. only for a throttled client, one limiter call (a tighter sliding-window limit, atomic on every backend).

Policy mitigations (``logit_bias`` + ``logprobs``, ``top_logprobs`` and ``logit_bias`` caps,
instance caps) are checked on the already-read body, without storage.

Log (after the response, no added latency): one ``mget`` of the client and group states, the
detector, one ``set`` of the client's state, one of the group's once it has seen a second client
(a one-client group is a record written once, see ``_group_state``; seeding the group when the
second client shows up reads the first one's state, once) and, when a level is reached or
renewed, one ``set`` of the
verdict (TTL'd, so every node honours it and forgets it at the same time). Blocks and revocations
go through the :class:`~kong_plugins.region.Denylist` instead: the same key plus an audit event
(who, why, when), which the region's sync worker replicates to every other region. Concurrent updates of
one client's state on two nodes are last-writer-wins: a lost update costs one request's evidence,
never a false decision, which is why the guard does not pay for a compare-and-set script here.

States are text in Redis (``ClientState.to_text``, decoded again only when another node wrote
it: ``StateCache``); the memory backend keeps the state objects themselves (``set_object``), changed
in place by the detector and renewed by the read that returns them -- no codec on a single node,
and for a client seen before no write either. The log phase of one client runs without
yielding between its read and its write on that backend (no I/O), so no other request of the
process sees a state half-updated; should the detector raise midway, the state keeps what it had
already counted of that request (text storage would keep the state before it).

Verdict times are request times (Kong's start time), so a replay of logged traffic through
``learn``/``check_access`` reproduces the live decisions.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from kong_plugins.frozen import positional_builder
from kong_plugins.region.denylist import Denylist, global_verdict_key, revoked_key, state_key, throttle_key, verdict_key
from kong_plugins.storage import Limiter, RateRule, Storage
from kong_plugins.storage.memory import MemoryStorage

from .config import LEVELS, GuardConfig
from .detector import ALLOW, BLOCK, FLAG, REVOKE, THROTTLE, Assessment, Detector, Observation, member_hash
from .payloads import body_predict_rows, llm_request, parse_json, policy_violation, predict_rows
from .state import ClientState

NS = "xg"
#: Keys of this many recent (tenant, client, group, ...) combinations are kept built: a key is
#: percent-escaped part by part (~2 us each, four per request), and the clients of a busy node
#: recur. ~0.3 KB each.
KEY_CACHE = 16384
#: Memory of the decoded states kept by ``StateCache`` (Redis): ~1,500 clients of a 64-feature
#: model with full rings, ~4,000 LLM clients with full prompt rings.
STATE_CACHE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request is attributed to: the scored client, its group and its credential."""

    client: str
    group: str | None = None
    credential: str | None = None
    #: The caller's tenant (verified identity only); every key of the client lives in its namespace.
    tenant: str = "default"
    #: The client IP Kong resolved, checked against the cross-tenant IP denylist.
    ip: str | None = None


@dataclass(frozen=True)
class AccessOutcome:
    """What the access phase does; ``status`` set means the request is answered by the gateway."""

    action: str  # allow | flag | refuse | throttle | block | revoke
    status: int | None = None
    message: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    upstream_headers: dict[str, str] = field(default_factory=dict)
    shadow_action: str | None = None
    level: str = "allow"


@dataclass(frozen=True)
class Verdict:
    level: int
    until: float
    score: float

    def encode(self) -> str:
        return f"{self.level}|{self.until:.3f}|{self.score:.2f}"

    @classmethod
    def decode(cls, raw: str | None) -> Verdict | None:
        if not raw:
            return None
        try:
            level, until, score = raw.split("|")
            return cls(int(level), float(until), float(score))
        except ValueError:
            return None


@dataclass(frozen=True)
class Decision:
    """A level reached in the log phase, with the explanation record."""

    subject: str  # "client" or "group"
    key: str
    assessment: Assessment
    t: float
    tenant: str = "default"

    def record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"event": "ai-extraction-guard.decision", "tenant": self.tenant,
                               "subject": self.subject, "client": self.key, "t": self.t}
        rec.update(self.assessment.explanation())
        return rec


class ExtractionGuard:
    """Access check and log-phase learning for one plugin instance."""

    def __init__(self, cfg: GuardConfig, storage: Storage, detector: Detector | None = None,
                 on_decision: Callable[[Decision], None] | None = None, denylist: Denylist | None = None) -> None:
        self.cfg = cfg
        self.storage = storage
        self.limiter = Limiter(storage)
        self.detector = detector or Detector(cfg)
        self.on_decision = on_decision
        self.denylist = denylist or Denylist(storage, region=None)
        #: Decoded states this instance wrote last, reused while storage still holds that text.
        self.states = StateCache()
        #: The memory backend keeps each state itself (``set_object``): nothing is encoded or
        #: decoded per request, and ``states`` stays empty. Other backends hold the state's text.
        self._objects = storage if isinstance(storage, MemoryStorage) else None
        m = cfg.mitigations
        #: Whether any policy mitigation is on (none by default): decided once, so that access does
        #: not call ``_mitigate`` per request only to find every switch off.
        self._mitigating = (m.refuse_logit_bias_with_logprobs or m.max_top_logprobs is not None
                            or m.max_logit_bias_entries is not None or m.max_instances is not None)

    # -- keys -------------------------------------------------------------------------------------

    @staticmethod
    def revoked_key(credential: str, tenant: str = "default") -> str:
        return revoked_key(tenant, credential)

    @staticmethod
    def verdict_key(subject: str, tenant: str = "default") -> str:
        return verdict_key(tenant, subject)

    @staticmethod
    def state_key(subject: str, tenant: str = "default") -> str:
        return state_key(tenant, subject)

    # -- access -------------------------------------------------------------------------------

    def check_access(self, ident: Identity, now: float, body: bytes | None) -> AccessOutcome:
        """Decide the request before it is proxied; raises ``StorageError`` if storage fails."""
        keys, revoked_at = _access_keys(ident.tenant, ident.client, ident.group, ident.ip, ident.credential)
        values = self.storage.mget(keys, now=now)
        # Most requests have no verdict and no revocation: allowed without reading any.
        outcome = self._from_verdicts(ident, now, values, revoked_at) if any(values) else _ALLOWED
        if outcome.status is None and body is not None and self._mitigating:
            outcome = self._mitigate(body, outcome)
        if self.cfg.shadow and outcome.status is not None:
            return AccessOutcome(action="allow", shadow_action=outcome.action, level=outcome.level)
        return outcome

    def _from_verdicts(self, ident: Identity, now: float, values: list[str | None],
                       revoked_at: int | None = None) -> AccessOutcome:
        """The outcome of the stored verdicts and revocation (at least one value is set: ``check_access``)."""
        if revoked_at is not None and values[revoked_at]:
            return AccessOutcome("revoke", 401, "credential revoked", level="revoke")
        best: Verdict | None = None
        for raw in values[:revoked_at]:
            v = Verdict.decode(raw)
            if v is not None and v.until > now and (best is None or v.level > best.level):
                best = v
        if best is None or best.level == ALLOW:
            return _ALLOWED
        if best.level >= BLOCK:
            retry = max(1, int(best.until - now))
            return AccessOutcome("block", 403, "access suspended", {"Retry-After": str(retry)},
                                level=LEVELS[best.level])
        # The tenant travels percent-encoded: a verified claim may still hold characters (CR, LF)
        # that must never reach a header.
        flag_headers = {self.cfg.flag_header: f"{LEVELS[best.level]}; score={best.score:.2f}; "
                                              f"tenant={quote(ident.tenant, safe='')}"}
        if best.level == THROTTLE:
            rule = RateRule(name="extraction-throttle", key=throttle_key(ident.tenant, ident.client),
                            limit=self.cfg.throttle_limit, period=self.cfg.throttle_window_s)
            decision = self.limiter.check_and_consume([rule], now=now)
            if not decision.allowed:
                return AccessOutcome("throttle", 429, "rate limited",
                                     {"Retry-After": str(max(1, int(decision.retry_after + 0.999)))},
                                     level="throttle")
            return AccessOutcome("flag", upstream_headers=flag_headers, level="throttle")
        return AccessOutcome("flag", upstream_headers=flag_headers, level="flag")

    def _mitigate(self, body: bytes, outcome: AccessOutcome) -> AccessOutcome:
        """Refuse a body that breaks a policy mitigation (called only when one is on: ``_mitigating``)."""
        m = self.cfg.mitigations
        # Cheap pre-filter: only bodies that can break an LLM rule are parsed on the request path.
        # Both keys hold an "l", which predict bodies (digits and "instances") never do: one memchr
        # for the byte (an int operand: ~20 ns on 3 KB) rules them out before the two substring
        # scans (~2.3 us on an 8-row predict body), which every other body still goes through.
        # A JSON key may be written with escapes ("top_\u006cogprobs" is top_logprobs to the
        # model's parser) and then holds neither the "l" nor the name: a body with a backslash is
        # always parsed (a chat body with a "\n" in its prompt too; predict bodies have none).
        if m.max_instances is None and _BACKSLASH not in body and (
                _L not in body or (b"logit_bias" not in body and b"logprobs" not in body)):
            return outcome
        message = policy_violation(parse_json(body), m)
        if message is None:
            return outcome
        return AccessOutcome("refuse", 400, message, level=outcome.level)

    # -- log ----------------------------------------------------------------------------------

    def learn(self, ident: Identity, obs: Observation) -> list[Decision]:
        """Update the client's (and group's) state from one proxied request; the decisions made."""
        keys = _state_keys(ident.tenant, ident.client, ident.group)
        objects = self._objects
        # On the memory backend the states read are the stored objects, their TTL renewed by the
        # read itself: one storage call for a client seen before.
        raw: list[Any] = (objects.get_objects(keys, now=obs.t, renew_ttl=self.cfg.state_ttl_s) if objects is not None
                          else self.storage.mget(keys, now=obs.t))
        decisions: list[Decision] = []
        blob = raw[0]
        state = blob if type(blob) is ClientState else self._cached_state(keys[0], blob)
        self._learn(ident.client, keys[0], state, state is not None and state is blob, ident, obs, decisions,
                    is_group=False)
        if ident.group:
            observed, group = self._group_state(ident, keys[1], raw[1], obs.t)
            if observed:
                self._learn(ident.group, keys[1], group, group is not None and group is raw[1], ident, obs,
                            decisions, is_group=True)
        return decisions

    def _cached_state(self, key: str, blob: Any) -> ClientState | None:
        """The state of what storage answered: the object itself from the memory backend, else
        the decoding of the text (spared when this instance wrote that very text last)."""
        if type(blob) is ClientState:
            return blob
        state = self.states.take(key, blob) if blob else None
        return state if state is not None else _decode_state(blob)

    def _learn(self, subject: str, key: str, state: ClientState | None, stored: bool, ident: Identity,
               obs: Observation, decisions: list[Decision], *, is_group: bool) -> None:
        """Observe the client's state, or its group's (``stored``: the very object the memory
        backend holds, renewed)."""
        # A group's requests are its clients' requests: the route baseline learns them once.
        st, assessment = self.detector.observe(state, obs, is_group=is_group, learn=not is_group,
                                               member=ident.client if is_group else None)
        objects = self._objects
        if objects is not None:
            if not stored:  # a new state (or one decoded from text): kept from now on
                objects.set_object(key, st, ttl=self.cfg.state_ttl_s, now=obs.t)
        else:
            text = _encode_state(st)
            self.storage.set(key, text, ttl=self.cfg.state_ttl_s, now=obs.t)
            self.states.put(key, text, st)
        if assessment.publish:
            self._publish(subject, ident, assessment, obs.t)
        if assessment.level > ALLOW and assessment.escalated:  # (most requests: allow, no escalation to read)
            decision = Decision("group" if is_group else "client", subject, assessment, obs.t, ident.tenant)
            decisions.append(decision)
            if self.on_decision is not None:
                self.on_decision(decision)

    def _group_state(self, ident: Identity, key: str, blob: Any, now: float) -> tuple[bool, ClientState | None]:
        """Whether the group is observed for this request, and its state.

        A group exists to see an attack split across several clients; most groups (an IP behind
        which one consumer calls) only ever see one, and everything such a group could notice the
        client's own state already does -- while decoding, scoring, encoding and writing a second
        copy of its inputs cost a fifth of the log phase. So a group that has seen one client is
        a small record naming it (``SoloGroup``), written once and refreshed only every half
        ``state_ttl_s``, and the group is not observed. When a second client shows up, the group
        starts from the first one's state (``_seed_group``): the same recent inputs, prompts and
        biased ids the group would have kept, so the second client's queries meet the first one's.
        """
        if type(blob) is str and blob[0] == _SOLO_MARK:
            solo = _solo_record(blob)  # (member, written), read on every request of the group
            if solo is not None and solo[0] != ident.client:
                return True, self._seed_group(ident.tenant, solo[0], now)
            if solo is not None and now - solo[1] < self.cfg.state_ttl_s / 2:
                return False, None
        elif blob:
            state = self._cached_state(key, blob)
            if state is None or state.members != (member_hash(ident.client),):
                return True, state
            # else: a one-client group's full state, as a release before the record kept it
        # Text on every backend: a string is no work for the cyclic garbage collector, which the
        # memory backend's objects are (one per client is what it keeps; see ClientState).
        self.storage.set(key, SoloGroup(ident.client, now).to_text(), ttl=self.cfg.state_ttl_s, now=now)
        return False, None

    def _seed_group(self, tenant: str, first: str, now: float) -> ClientState:
        """A group's state when its second client shows up, from its first client's state: the
        recent inputs, prompts and biased token ids (kept by the same rules a group keeps them)
        and the request counters. Its scores start at zero, as a one-client group's stayed. One
        more storage read, once per group. Without the first client's state (expired, evicted)
        the group starts empty, knowing the first client as a member."""
        group = ClientState.new(now)
        first_state = _decode_state(self.storage.get(state_key(tenant, first), now=now))
        if first_state is not None:
            group.t_first, group.t_last, group.n = first_state.t_first, first_state.t_last, first_state.n
            group.rate_short, group.rate_long = first_state.rate_short, first_state.rate_long
            group.out_tokens = first_state.out_tokens
            group.rows, group.rows_n = first_state.rows, first_state.rows_n
            group.prompts, group.simhashes = first_state.prompts, first_state.simhashes
            group.biased_ids = first_state.biased_ids
        group.members = (member_hash(first),)
        return group

    def _publish(self, subject: str, ident: Identity, a: Assessment, now: float) -> None:
        ttl = a.until - now
        if ttl <= 0:
            return
        level = a.level
        if level >= BLOCK:
            # Through the denylist: the same keys, plus an audit event the sync worker replicates
            # to every region (who: this plugin in this region; why: the strongest signals).
            who = f"ai-extraction-guard@{self.denylist.region or 'local'}"
            why = _why(a)
            if level == REVOKE and ident.credential:
                self.denylist.revoke(ident.credential, tenant=ident.tenant, ttl=ttl, who=who, why=why,
                                     client=subject, now=now)
            elif level == REVOKE:
                level = BLOCK
            self.denylist.block(subject, tenant=ident.tenant, ttl=ttl, who=who, why=why, level=level,
                                score=a.extraction, now=now)
            return
        self.storage.set(self.verdict_key(subject, ident.tenant), Verdict(level, a.until, a.extraction).encode(),
                         ttl=ttl, now=now)


def _why(a: Assessment) -> str:
    top = sorted(a.totals.items(), key=lambda kv: -kv[1])[:3]
    signals = ", ".join(f"{name}={value:.2f}" for name, value in top) or "score"
    return f"{LEVELS[a.level]} at extraction score {a.extraction:.2f} ({signals})"


@lru_cache(maxsize=KEY_CACHE)
def _access_keys(tenant: str, client: str, group: str | None, ip: str | None,
                 credential: str | None) -> tuple[tuple[str, ...], int | None]:
    """The access phase's MGET: client verdict, group verdict, cross-tenant IP block, revocation
    (with its index)."""
    keys = [verdict_key(tenant, client)]
    if group:
        keys.append(verdict_key(tenant, group))
    if ip:
        keys.append(global_verdict_key(f"ip:{ip}"))
    revoked_at: int | None = None
    if credential:
        revoked_at = len(keys)
        keys.append(revoked_key(tenant, credential))
    return tuple(keys), revoked_at


@lru_cache(maxsize=KEY_CACHE)
def _state_keys(tenant: str, client: str, group: str | None) -> tuple[str, ...]:
    """The log phase's state keys: the client's, then its group's."""
    return (state_key(tenant, client), state_key(tenant, group)) if group else (state_key(tenant, client),)


class StateCache:
    """The states this guard wrote most recently, decoded, while storage still holds their text
    (Redis; the memory backend keeps the state objects themselves and needs no cache).

    Every request reads its client's and group's states and writes them back. When the text read
    is the very text this process wrote last for the key, the state it was encoded from is what
    decoding would give (the format round-trips exactly), so decoding is skipped. Anything else (another node wrote,
    the key expired, a Redis failover lost the write) does not match and is decoded as usual. An
    entry is removed while its state is being updated, so a concurrent request for the same
    client (another greenlet) decodes storage's text rather than sharing the object. Bounded by
    ``max_bytes`` of memory: an entry counts its text, its decoded arrays (a ring decoded from an
    earlier release's text has its full capacity even for a client's first input: 4 KB for a
    64-feature model, where the text of that state is ~0.5 KB), its integers and a fixed allowance
    for the other objects. Counting the text alone let a 16 MB cache hold ~66 MB of fresh
    64-feature clients.
    """

    __slots__ = ("_bytes", "_entries", "max_bytes")

    #: Memory of a decoded state beyond its text, arrays and integers (the state object, its lists
    #: and dict, array headers, the entry and its key): ~1.4 KB measured for a 64-feature client.
    ENTRY_OVERHEAD = 1536
    #: An integer of the state's prompt, token and member lists: a list slot and an int object.
    INT_BYTES = 40

    def __init__(self, max_bytes: int = STATE_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[str, ClientState, int]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes_held(self) -> int:
        """The memory the entries are counted for (at most ``max_bytes``)."""
        return self._bytes

    def take(self, key: str, text: str) -> ClientState | None:
        """The decoded state of ``text`` if this cache holds it (and no longer does), else None."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self._bytes -= entry[2]
        if entry[0] is text or entry[0] == text:
            return entry[1]
        return None

    def put(self, key: str, text: str, state: ClientState) -> None:
        """Remember ``state`` as the decoding of ``text`` (just written under ``key``)."""
        size = len(text) + self.ENTRY_OVERHEAD + self.INT_BYTES * (
            len(state.prompts) + len(state.simhashes) + len(state.biased_ids) + len(state.members))
        for array_ in (state.rows, state.kept, state.ratios, state.words):
            if array_ is not None:
                size += array_.nbytes
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old[2]
        if size > self.max_bytes:
            return
        self._entries[key] = (text, state, size)
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, (_, _, evicted) = self._entries.popitem(last=False)
            self._bytes -= evicted


#: The outcome of most requests; immutable in practice (nothing writes an outcome's headers).
_ALLOWED = AccessOutcome("allow")
#: The byte "l", as an int: ``int in bytes`` is a memchr, ``b"l" in bytes`` a slower substring search.
_L = ord("l")
_BACKSLASH = ord("\\")

#: First character of a state stored by ``_encode_state`` (the binary format's version byte).
_STATE_TEXT_MARK = "\x03"


#: First character of a one-client group's record (``ExtractionGuard._group_state``).
_SOLO_MARK = "\x04"


@dataclass(frozen=True, slots=True)
class SoloGroup:
    """A group that has seen one client: who, and when the record was written (request time).

    Stored as its text (``to_text``) on every backend."""

    member: str
    written: float

    def to_text(self) -> str:
        return f"{_SOLO_MARK}{self.written!r}\x00{self.member}"

    @classmethod
    def from_text(cls, blob: str) -> SoloGroup | None:
        """The record ``to_text`` wrote; None for anything else."""
        parsed = _parse_solo(blob)
        return cls(*parsed) if parsed is not None else None


def _parse_solo(blob: str) -> tuple[str, float] | None:
    """``SoloGroup.from_text`` as a plain ``(member, written)``, or None."""
    written, sep, member = blob[1:].partition("\x00")
    if not sep or not member or blob[:1] != _SOLO_MARK:
        return None
    try:
        return member, float(written)
    except ValueError:
        return None


#: ``_parse_solo`` of the records read most recently: every request of a client behind a one-client
#: group reads its group's record, unchanged for half ``state_ttl_s``, and parsing it again (a
#: Python call, a slice, a split and a float) cost more than finding it here (one C call; the
#: memory backend returns the very string stored, whose hash is kept). The parse is a function of
#: the text alone, so a record another node wrote is found as well. ~0.25 KB an entry (its text
#: is the store's own on the memory backend); the texts stay strings in storage (see
#: ``_group_state``).
_solo_record = lru_cache(maxsize=KEY_CACHE)(_parse_solo)


def solo_group_client(blob: str | None) -> str | None:
    """The one client a group has seen, if ``blob`` is such a group's record (operators' view)."""
    solo = SoloGroup.from_text(blob) if blob else None
    return solo.member if solo is not None else None


def _encode_state(st: ClientState) -> str:
    """The state as storage text (``ClientState.to_text``; ``_decode_state`` reads it)."""
    return st.to_text()


def _decode_state(blob: str | None) -> ClientState | None:
    if not blob:
        return None
    try:
        if blob[0] == _STATE_TEXT_MARK:
            return ClientState.from_bytes(blob.encode("latin-1"))
        if blob[0] == _SOLO_MARK:  # a one-client group's record: no state of its own
            return None
        # written by an earlier release: msgpack in base64 (ClientState reads that format too)
        return ClientState.from_bytes(base64.b64decode(blob, validate=True))
    except ValueError:
        return None


__all__ = ["FLAG", "AccessOutcome", "Decision", "ExtractionGuard", "Identity", "Verdict"]


#: Without a response tap, output tokens are estimated from the response size (bytes per token of
#: English text in an OpenAI-style JSON or SSE answer, framing included; an estimate, see README).
BYTES_PER_OUTPUT_TOKEN = 6.0


def build_observation(cfg: GuardConfig, t: float, route: str, body: bytes | None, *,
                      request_size: int = 0, response_size: int | Callable[[], int] = 0,
                      tap: dict[str, Any] | None = None) -> Observation:
    """The detector's view of one request, from what the log phase has (body stashed in access).

    ``response_size`` may be a function: it is called only when the size is needed (an LLM request
    whose output tokens no response tap counted), so the log phase reads it from Kong only then.
    """
    rows = body_predict_rows(body, cfg.max_rows_per_request) if body is not None else None
    llm = None
    if rows is None:  # not the common predict body: the general parser decides what it is
        doc = parse_json(body) if body is not None else None
        rows = predict_rows(doc, cfg.max_rows_per_request) if doc is not None else None
        llm = llm_request(doc) if rows is None and doc is not None else None
    margins = tap.get("m") if tap else None
    tokens = tap.get("o") if tap else None
    if tokens is None and llm is not None:
        size = response_size() if callable(response_size) else response_size
        if size > 0:
            tokens = size / BYTES_PER_OUTPUT_TOKEN
    return _build_observation(t, route, request_size or (len(body) if body else 0), rows,
                              margins if isinstance(margins, list) else None, llm,
                              float(tokens) if isinstance(tokens, _NUMBER) else None)


#: The types of a number in the tap's summary (a tuple: ``int | float`` would build a union each call).
_NUMBER = (int, float)


#: ``Observation(*fields)`` without its frozenness's cost (kong_plugins.frozen), once a request.
_build_observation = positional_builder(Observation)
