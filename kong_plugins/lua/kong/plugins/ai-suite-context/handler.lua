-- ai-suite-context: gathers, once per request and inside Kong, the request facts the
-- kong-ai-plugins suite (ai-tier-quota, ai-prompt-inspector, ai-extraction-guard) needs in its
-- access phase, and leaves them in kong.ctx.shared for the suite's external plugins to read with
-- ONE plugin-server round trip (kong.ctx.shared.get).
--
-- Why: an external plugin cannot call kong.log.serialize() in the access phase. The plugin-server
-- bridge answers it with kong.log.serialize() outside the log timer
-- (kong/runloop/plugin_servers/plugin.lua, exposed_api), and serialize is a log-phase function
-- (kong/pdk/log.lua: prepare_serialize -> check_phase(PHASES_LOG)), so the call is a Lua error and
-- the request a 500. Gathering the same facts one PDK call at a time costs a round trip each.
--
-- What: the subset of kong.log.serialize() the suite reads, with the same values serialize would
-- report later in the log phase (so a plugin can match its access-phase state with its log phase):
-- request method, uri (ngx.var.request_uri) and size (ngx.var.request_length), the TLS client
-- verification status, route and service (id, name), consumer (id, username, custom_id, tags),
-- the credential id (authenticated_entity), the client IP Kong resolved and the start time.
-- Nothing secret: no headers but Content-Type (no authorization), no credential material.
--
-- And the request body (request.body, not a serialize field), up to request_body_max_bytes: the
-- suite's plugins all read it -- ai-prompt-inspector always, ai-extraction-guard on POST/PUT/PATCH,
-- ai-tier-quota to estimate tokens -- and each kong.request.get_raw_body is a round trip from its
-- plugin server; reading it here is none. The body is read only when its length is known and
-- within the limit (Content-Length; a request with neither Content-Length nor Transfer-Encoding
-- has none, ""). Otherwise (chunked, larger, or nginx kept it in a file larger than the limit) it
-- is left out and each plugin asks Kong for it with its own limit, as without this companion.
--
-- Priority 1020: below every bundled authentication plugin that sets the consumer (jwt 1450,
-- oauth2 1400, key-auth 1250, ldap-auth 1200, basic-auth 1100, hmac-auth 1030) and above the
-- suite's first plugin (ai-extraction-guard 1010). kong.ctx.shared is per request and only
-- plugins write it: a client cannot forge these facts.

local kong = kong
local ngx = ngx
local type = type
local ipairs = ipairs
local tonumber = tonumber

local FACTS_KEY = "ai_suite_facts"

local SuiteContext = {
  PRIORITY = 1020,
  VERSION = "0.2.0",
}


local function text(value)
  if type(value) == "string" and value ~= "" then
    return value
  end
  return nil
end


local function entity(value)
  if type(value) ~= "table" then
    return nil
  end
  return { id = text(value.id), name = text(value.name) }
end


local function consumer_of(value)
  if type(value) ~= "table" or not text(value.id) then
    return nil
  end
  local tags
  if type(value.tags) == "table" then
    tags = {}
    for _, tag in ipairs(value.tags) do
      if type(tag) == "string" then
        tags[#tags + 1] = tag
      end
    end
  end
  return {
    id = value.id,
    username = text(value.username),
    custom_id = text(value.custom_id),
    tags = tags,
  }
end


local function credential_of(value)
  if type(value) ~= "table" or not text(value.id) then
    return nil
  end
  -- serialize's authenticated_entity: the credential's id (and consumer_id on old credentials)
  return { id = value.id, consumer_id = text(value.consumer_id) }
end


local function request_body(limit)
  if type(limit) ~= "number" or limit <= 0 then
    return nil
  end
  local length = kong.request.get_header("content-length")
  if length == nil then
    if kong.request.get_header("transfer-encoding") == nil then
      return ""  -- no body at all (RFC 9112 6.3: neither header, no content)
    end
    return nil   -- chunked: its length is known only once read; each plugin reads it with its limit
  end
  length = tonumber(length, 10)
  if not length or length < 0 or length > limit then
    return nil
  end
  -- nil when nginx buffered it to a file larger than the limit (kong/pdk/request.lua, 3.9)
  return kong.request.get_raw_body(limit)
end


function SuiteContext:access(conf)
  local tls
  if kong.request.get_scheme() == "https" then
    -- serialize's request.tls.client_verify (kong/pdk/log.lua, prepare_serialize)
    tls = { client_verify = ngx.ctx.CLIENT_VERIFY_OVERRIDE or ngx.var.ssl_client_verify }
  end

  kong.ctx.shared[FACTS_KEY] = {
    request = {
      method = kong.request.get_method(),
      uri = kong.request.get_path_with_query(),
      size = tonumber(ngx.var.request_length),
      tls = tls,
      headers = { ["content-type"] = kong.request.get_header("content-type") },
      body = request_body(conf.request_body_max_bytes),
    },
    route = entity(kong.router.get_route()),
    service = entity(kong.router.get_service()),
    consumer = consumer_of(kong.client.get_consumer()),
    authenticated_entity = credential_of(kong.client.get_credential()),
    client_ip = kong.client.get_forwarded_ip(),
    started_at = kong.request.get_start_time(),
  }
end


-- The log phase: completing ai-extraction-guard's hand-off.
--
-- The guard learns after the response, in its plugin server's log timer
-- (kong/runloop/plugin_servers/plugin.lua, build_phases), from a table its access phase left in
-- kong.ctx.shared (the body and who sent it). That timer runs after the request's whole log
-- phase and reads kong.ctx.shared by reference (ctx_shared = kong.ctx.shared), so what this
-- handler adds to the table is there when it runs -- and each value saves it a round trip: the
-- response's size as kong.log.serialize() reports it (kong/pdk/log.lua: response.size =
-- var.bytes_sent), which an LLM request needs when no response tap counted its output (else a
-- serialize call, ~2 KB of JSON built in Kong and parsed in the plugin server), and the summary
-- the response tap (ai-extraction-guard-tap) left (else one more kong.ctx.shared.get).
-- A guard that finds neither asks Kong itself, as it does without this companion.
local HANDOFF_KEYS = {
  "ai_extraction_guard.body",              -- the guard's hand-off
  "ai_suite.decided.ai-extraction-guard",  -- the same, inside its decision mark (decision_mark)
}
local TAP_KEY = "ai_extraction_guard.tap"


function SuiteContext:log(conf)
  local shared = kong.ctx.shared
  for _, key in ipairs(HANDOFF_KEYS) do
    local handed = shared[key]
    if type(handed) == "table" and handed.body ~= nil then
      local sent = ngx.var.bytes_sent
      handed.response_size = sent and tonumber(sent, 10) or 0
      handed.tap = shared[TAP_KEY]
      shared[key] = handed  -- the same table in Kong; stored again for hosts that hand out copies
    end
  end
end


return SuiteContext
