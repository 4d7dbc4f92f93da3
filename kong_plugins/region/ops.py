"""``kong-ai-ops``: the operator's tool for denylists, quota and risk state, in any region.

It talks to each region's Redis directly (the regions file of the sync worker), never to Kong::

    kong-ai-ops --regions regions.yml --region eu block consumer:4f1c... --tenant acme \\
        --ttl 3600 --who alice --why "INC-1234: scraping"
    kong-ai-ops --regions regions.yml --region eu unblock consumer:4f1c... --tenant acme --who alice --why "fixed"
    kong-ai-ops --regions regions.yml --region us block ip:203.0.113.9 --all-tenants --ttl 600 --who soc --why botnet
    kong-ai-ops --regions regions.yml --region eu revoke <credential> --tenant acme --ttl 86400 --who alice --why leak
    kong-ai-ops --regions regions.yml list                 # blocks and revocations in force, every region
    kong-ai-ops --regions regions.yml audit --count 20     # who, why, when -- every region
    kong-ai-ops --regions regions.yml inspect --tenant acme --consumer 4f1c...   # quota + risk state
    kong-ai-ops --regions regions.yml health               # heartbeats of the exchange, every region
    kong-ai-ops --regions regions.yml --region eu callback --listen 127.0.0.1:9107 --secret-env SOAR_SECRET

Decisions are written in the region named by ``--region`` (where the operator acts); that
region's sync worker replicates them. Reads go to ``--region`` or, by default, every region.
Every command prints JSON lines; exit status 0 on success, 1 when a region failed, 2 on usage
errors (bad file, unknown region, missing tenant...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from kong_plugins.errors import ConfigError, StorageError
from kong_plugins.storage import RedisStorage, Storage
from kong_plugins.storage.keys import KEY_PREFIX, escape_part, remote_key_of

from .config import RegionsFile, load_regions_file
from .denylist import Denylist, revoked_key, state_key, throttle_key, verdict_key
from .exchange import read_health

Emit = Callable[[dict[str, Any]], None]


def _glob(text: str) -> str:
    """Escape glob metacharacters for SCAN MATCH."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _unescape(part: str) -> str:
    return part.replace("%3A", ":").replace("%7B", "{").replace("%7D", "}").replace("%25", "%")


def _parts(key: str) -> list[str]:
    """The escaped parts after a key's namespace and hash tag, unescaped."""
    end = key.find("}")
    tail = key[end + 2:] if end >= 0 else key.split(":", 2)[-1]
    return [_unescape(p) for p in tail.split(":")]


def _describe_quota(client: Any, full_key: str, prefix: str) -> dict[str, Any] | None:
    key = full_key[len(prefix):]
    kind = client.type(full_key)
    parts = _parts(key)
    names = ("tenant", "tier", "limit", "window", "model", "kind", "subject")
    out: dict[str, Any] = dict(zip(names, parts, strict=False))
    out["key"] = key
    if kind == "string":
        value = str(client.get(full_key) or "")
        first, _, second = value.partition(" ")
        if out.get("window") in ("per_day", "tokens_per_day"):
            out["state"] = {"calendar_window": int(float(first or 0)), "used": float(second or 0)}
        elif value.count(":") == 3:
            # a sliding window (limiter.lua kind 1): "<newest>:<oldest>:<total>:<counts>"
            newest, oldest, total, _ = value.split(":")
            out["state"] = {"window_used": int(total), "newest_bucket": int(newest),
                            "buckets": int(newest) - int(oldest) + 1}
        else:  # the GCRA state earlier versions wrote
            out["state"] = {"gcra_level": float(first or 0), "updated_us": float(second or 0)}
    elif kind == "hash":
        local = client.hgetall(full_key)
        remote = client.hgetall(prefix + remote_key_of(key))
        out["state"] = {"global_local_used": sum(int(float(v)) for v in local.values()),
                        "global_remote_used": sum(int(float(v)) for v in remote.values()),
                        "buckets": len(local)}
    elif kind == "zset":
        now = time.time() * 1_000_000
        out["state"] = {"in_flight": client.zcount(full_key, f"({now}", "+inf")}
    else:
        return None
    out["ttl_ms"] = client.pttl(full_key)
    return out


def quota_state(storage: Storage, tenant: str, subjects: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """ai-tier-quota counters of ``tenant`` for each (kind, value) subject, found with SCAN."""
    if not isinstance(storage, RedisStorage):
        raise ConfigError("regions", "inspect needs a Redis region")
    client, prefix = storage.client, storage.key_prefix
    seen: dict[str, dict[str, Any]] = {}
    for kind, value in subjects:
        # "{*}": the only braces of a key are its hash tag, so the tenant is exactly the next part.
        pattern = (f"{_glob(prefix)}{KEY_PREFIX}:tq:{{*}}:{_glob(escape_part(tenant))}:*:{_glob(escape_part(kind))}:"
                   f"{_glob(escape_part(value))}")
        for full in client.scan_iter(match=pattern, count=1000):
            name = str(full)
            if name not in seen and (described := _describe_quota(client, name, prefix)) is not None:
                seen[name] = described
    return sorted(seen.values(), key=lambda d: d["key"])


def risk_state(storage: Storage, tenant: str, subject: str, credential: str | None) -> dict[str, Any]:
    """ai-extraction-guard state, verdict, throttle and revocation of one client of ``tenant``."""
    from kong_plugins.extraction_guard.guard import Verdict, _decode_state, solo_group_client

    values = storage.mget([state_key(tenant, subject), verdict_key(tenant, subject), throttle_key(tenant, subject)]
                          + ([revoked_key(tenant, credential)] if credential else []))
    out: dict[str, Any] = {"tenant": tenant, "subject": subject}
    st = _decode_state(values[0])
    if st is not None:
        out["state"] = {"requests": st.n, "extraction_score": round(st.extraction, 3),
                        "abuse_score": round(st.abuse, 3), "level": st.level, "level_until": st.level_until,
                        "blocks": st.blocks,
                        "signals": {k: round(v, 3) for k, v in sorted(st.contrib.items(), key=lambda kv: -kv[1])[:6]},
                        "last_seen": st.t_last}
    elif (only := solo_group_client(values[0])) is not None:
        # a group (an IP) that has seen one client: the client's own state holds the evidence
        out["state"] = {"one_client_group_of": only}
    verdict = Verdict.decode(values[1])
    if verdict is not None:
        out["verdict"] = {"level": verdict.level, "until": verdict.until, "score": verdict.score}
    if values[2]:
        out["throttle"] = values[2]
    if credential:
        out["revoked"] = json.loads(values[3]) if values[3] else None
    return out


def _subjects(args: argparse.Namespace) -> tuple[list[tuple[str, str]], str, str | None]:
    """(tier-quota subjects, guard subject, credential) named by the inspect flags."""
    quota: list[tuple[str, str]] = [("tenant", args.tenant)]
    guard_subject = f"tenant:{args.tenant}"
    if args.consumer:
        quota.append(("consumer", args.consumer))
        guard_subject = f"consumer:{args.consumer}"
    if args.credential:
        quota.append(("credential", args.credential))
        guard_subject = f"credential:{args.credential}" if not args.consumer else guard_subject
    if args.ip:
        quota.append(("ip", args.ip))
        guard_subject = f"ip:{args.ip}" if not (args.consumer or args.credential) else guard_subject
    return quota, guard_subject, args.credential


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kong-ai-ops", description=__doc__.splitlines()[0])
    parser.add_argument("--regions", required=True, help="the regions file (YAML) of the sync worker")
    parser.add_argument("--region", help="region to act in (required for changes) or to read (default: all)")
    sub = parser.add_subparsers(dest="command", required=True)

    def decision(name: str, what: str, ttl: bool) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=what)
        p.add_argument("target", help="consumer:<id>, credential:<id>, ip:<address>, tenant:<id> (blocks) or "
                                      "a credential id (revocations)")
        p.add_argument("--tenant", help="the tenant the client belongs to")
        if name in ("block", "unblock"):
            p.add_argument("--all-tenants", action="store_true", help="an ip:<address> block for every tenant")
        if ttl:
            p.add_argument("--ttl", type=float, required=True, help="seconds the decision lasts")
        p.add_argument("--who", required=True, help="who decides (recorded in the audit trail)")
        p.add_argument("--why", required=True, help="why (ticket, incident, evidence; recorded)")
        return p

    decision("block", "refuse a client, group or IP", True)
    decision("unblock", "lift a block", False)
    decision("revoke", "put a credential on the revocation list", True)
    decision("unrevoke", "take a credential off the revocation list", False)
    listing = sub.add_parser("list", help="blocks and revocations in force")
    listing.add_argument("--tenant", help="only this tenant's (and global) entries")
    audit = sub.add_parser("audit", help="the audit trail: who, why, when")
    audit.add_argument("--count", type=int, default=50, help="last N events per region")
    inspect = sub.add_parser("inspect", help="a client's quota counters and risk state")
    inspect.add_argument("--tenant", required=True, help="the client's tenant")
    inspect.add_argument("--consumer", help="Kong consumer id")
    inspect.add_argument("--credential", help="credential id")
    inspect.add_argument("--ip", help="client IP address")
    health = sub.add_parser("health", help="how long since each region's exchange last reached each region")
    health.add_argument("--expect", action="append", default=[],
                        help="exit 1 unless this region's worker reached every region read (repeatable; a "
                             "container health check of a sync worker)")
    health.add_argument("--max-age", type=float, default=15.0, help="seconds an --expect heartbeat may be old")
    callback = sub.add_parser("callback", help="serve the HMAC-signed SOAR callback (blocks and revocations)")
    callback.add_argument("--listen", default="127.0.0.1:9107", help="host:port (default %(default)s)")
    callback.add_argument("--secret-env", default="KONG_AI_SOAR_SECRET",
                          help="environment variable holding the HMAC secret (default %(default)s)")
    callback.add_argument("--name", default="soar", help="recorded as who: soar:<name>")
    callback.add_argument("--max-ttl", type=float, default=30 * 86400, help="longest TTL a callback may ask for")
    return parser


def run(argv: Sequence[str] | None = None, emit: Emit | None = None) -> int:
    args = build_parser().parse_args(argv)
    out: Emit = emit or (lambda record: print(json.dumps(record, sort_keys=True, default=str), flush=True))
    try:
        regions = load_regions_file(args.regions)
        if args.region is not None and args.region not in regions.storages:
            raise ConfigError("region", f"no region '{args.region}' in {args.regions} ({', '.join(regions.names)})")
        return _dispatch(args, regions, out)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace, regions: RegionsFile, out: Emit) -> int:
    command = args.command
    if command in ("block", "unblock", "revoke", "unrevoke", "callback"):
        if args.region is None:
            raise ConfigError("region", f"{command} acts in one region: give --region")
        storage = regions.storage(args.region)
        if command == "callback":
            from .callback import serve

            secret = os.environ.get(args.secret_env, "")
            if len(secret) < 16:
                raise ConfigError("secret-env", f"${args.secret_env} must hold an HMAC secret of 16+ characters")
            host, _, port = args.listen.rpartition(":")
            serve(Denylist(storage, region=args.region), secret, (host or "127.0.0.1", int(port)),
                  name=args.name, max_ttl=args.max_ttl)
            return 0
        deny = Denylist(storage, region=args.region)
        try:
            event = _decide(deny, args)
        except StorageError as exc:
            out({"region": args.region, "error": str(exc)})
            return 1
        out({"region": args.region, **event.as_dict()})
        return 0
    names = [args.region] if args.region else list(regions.names)
    status = 0
    for name in names:
        try:
            storage = regions.storage(name)
            if command == "list":
                for entry in Denylist(storage, region=name).active():
                    if args.tenant is None or entry.tenant in (args.tenant, ""):
                        out({"region": name, "kind": entry.kind, "tenant": entry.tenant, "subject": entry.subject,
                             "until": entry.until, "expires_in_s": round(entry.until - time.time(), 1)})
            elif command == "audit":
                for event in Denylist(storage, region=name).audit(args.count):
                    out({"region": name, **event.as_dict()})
            elif command == "inspect":
                quota, subject, credential = _subjects(args)
                out({"region": name, "quota": quota_state(storage, args.tenant, quota),
                     "risk": risk_state(storage, args.tenant, subject, credential)})
            elif command == "health":
                ages = {k.removeprefix("from:"): round(v, 3) for k, v in read_health(storage).items()}
                stale = [r for r in args.expect if ages.get(r, float("inf")) > args.max_age]
                out({"region": name, "heard_from": ages, **({"stale": stale} if stale else {})})
                if stale:
                    status = 1
        except StorageError as exc:
            out({"region": name, "error": str(exc)})
            status = 1
    return status


def _decide(deny: Denylist, args: argparse.Namespace) -> Any:
    command = args.command
    if command in ("block", "unblock"):
        tenant = None if args.all_tenants else args.tenant
        if tenant is None and not args.all_tenants:
            raise ConfigError("tenant", "name the client's --tenant, or --all-tenants for an ip:<address>")
        if command == "block":
            return deny.block(args.target, tenant=tenant, ttl=args.ttl, who=args.who, why=args.why)
        return deny.unblock(args.target, tenant=tenant, who=args.who, why=args.why)
    if not args.tenant:
        raise ConfigError("tenant", "revocations are per tenant: give --tenant")
    if command == "revoke":
        return deny.revoke(args.target, tenant=args.tenant, ttl=args.ttl, who=args.who, why=args.why)
    return deny.unrevoke(args.target, tenant=args.tenant, who=args.who, why=args.why)


def main() -> None:
    sys.exit(run())


__all__ = ["build_parser", "main", "quota_state", "risk_state", "run"]
