"""ai-extraction-guard: every key in the caller's tenant namespace; blocks audited through the denylist."""

from __future__ import annotations

from typing import Any

from kong_plugins.extraction_guard.config import GuardConfig
from kong_plugins.extraction_guard.detector import BLOCK, REVOKE, THROTTLE, Assessment
from kong_plugins.extraction_guard.guard import ExtractionGuard, Identity
from kong_plugins.extraction_guard.handler import identify
from kong_plugins.identity import IDENTITY_RECORD, IdentityResolver, parse_facts, parse_identity_config
from kong_plugins.region import Denylist
from kong_plugins.storage import MemoryStorage

T0 = 1_767_225_600.0
NAT = "198.51.100.20"  # two tenants' users behind one corporate NAT


class CountingStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__(clock=lambda: T0)
        self.calls: list[str] = []

    def mget(self, keys: Any, now: float | None = None) -> list[str | None]:
        self.calls.append("mget")
        return super().mget(keys, now)


def who(tenant: str, consumer: str, credential: str | None = None) -> Identity:
    return Identity(client=f"consumer:{consumer}", group=f"ip:{NAT}", credential=credential, tenant=tenant, ip=NAT)


def assessment(level: int) -> Assessment:
    return Assessment(level=level, previous_level=THROTTLE, extraction=9.5, abuse=0.0, evidence=(),
                      totals={"axis_probe": 9.5}, publish=True, until=T0 + 3600)


def guard(store: MemoryStorage | None = None) -> ExtractionGuard:
    store = MemoryStorage(clock=lambda: T0) if store is None else store
    return ExtractionGuard(GuardConfig(), store, denylist=Denylist(store, region="eu", clock=lambda: T0))


def test_a_block_of_one_tenants_nat_group_never_touches_another_tenant_behind_it() -> None:
    g = guard()
    attacker = who("acme", "mallory")
    g._publish(f"ip:{NAT}", attacker, assessment(BLOCK), T0)  # the group score of acme's NAT crossed block
    assert g.check_access(who("acme", "alice"), T0 + 1, None).status == 403  # acme's users behind it
    assert g.check_access(who("globex", "bob"), T0 + 1, None).status is None  # globex's users are not


def test_an_operator_ip_block_for_every_tenant_is_honoured_by_all() -> None:
    store = MemoryStorage(clock=lambda: T0)
    g = guard(store)
    Denylist(store, region="us", clock=lambda: T0).block(f"ip:{NAT}", tenant=None, ttl=60, who="soc", why="botnet")
    assert g.check_access(who("acme", "alice"), T0 + 1, None).status == 403
    assert g.check_access(who("globex", "bob"), T0 + 1, None).status == 403


def test_revocations_and_blocks_by_the_guard_are_audited_with_who_and_why() -> None:
    store = MemoryStorage(clock=lambda: T0)
    g = guard(store)
    thief = who("acme", "mallory", credential="cred-m")
    g._publish("consumer:mallory", thief, assessment(REVOKE), T0)
    assert g.check_access(thief, T0 + 1, None).status == 401
    # another tenant presenting the same credential id is not revoked: revocations are per tenant
    assert g.check_access(who("globex", "mallory", credential="cred-m"), T0 + 1, None).status is None
    events = Denylist(store, region="eu").audit()
    assert [(e.action, e.tenant, e.who) for e in events] == [("revoke", "acme", "ai-extraction-guard@eu"),
                                                              ("block", "acme", "ai-extraction-guard@eu")]
    assert "axis_probe" in events[0].why


def test_the_access_check_stays_one_storage_round_trip_with_the_global_ip_key() -> None:
    store = CountingStorage()
    g = guard(store)
    g.check_access(who("acme", "alice", credential="cred-a"), T0, None)
    assert store.calls == ["mget"]


def test_flagged_clients_carry_their_tenant_upstream_percent_encoded() -> None:
    store = MemoryStorage(clock=lambda: T0)
    g = guard(store)
    crafted = who("ac\r\nX-Admin: 1", "eve")
    store.set(g.verdict_key(crafted.client, crafted.tenant), "1|1767229200.000|3.50", ttl=600, now=T0)
    outcome = g.check_access(crafted, T0 + 1, None)
    assert outcome.upstream_headers == {"X-Extraction-Risk": "flag; score=3.50; tenant=ac%0D%0AX-Admin%3A%201"}


def test_the_guard_takes_the_tenant_from_verified_identity_not_from_consumer_names() -> None:
    resolver = IdentityResolver(parse_identity_config(IDENTITY_RECORD.coerce({}, "identity")), lambda: T0)
    facts = parse_facts({"consumer": {"id": "c-1", "username": "globex", "custom_id": "globex",
                                      "tags": ["tenant:acme"]},
                         "client_ip": NAT, "started_at": T0 * 1000,
                         "request": {"headers": {"x-consumer-custom-id": "globex", "x-tenant": "globex"}}})
    tenant = resolver.resolve(facts).tenant
    assert tenant == "acme"
    ident = identify(facts, GuardConfig(client_by="tenant"), tenant)
    assert (ident.client, ident.tenant, ident.ip) == ("tenant:acme", "acme", NAT)
