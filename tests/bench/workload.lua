-- The one wrk workload of `make bench-compare`, for both systems, so they do the same work:
-- 100-byte values over 10,000 keys, each thread walking the key space from its own offset.
--   wrk ... -s tests/bench/workload.lua http://127.0.0.1:PORT -- raftkv|etcd put|get [TOKEN]
-- raftkv: PUT /kv/bench/NNNNN {"value": ...}, GET /kv/bench/NNNNN (linearizable, the default).
-- etcd (v3 JSON gateway): POST /v3/kv/put {"key", "value"} and POST /v3/kv/range {"key"},
-- base64-encoded as the gateway wants; a range is linearizable unless asked otherwise.
local KEYS = 10000
local VALUE = string.rep("x", 100)
local headers = { ["Content-Type"] = "application/json" }
local system, op = "raftkv", "put"
local counter = 0
local thread_count = 0

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64(data)
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return B64:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data % 3 + 1])
end

local VALUE64 = base64(VALUE)

function setup(thread)
  thread:set("offset", thread_count * 5003)
  thread_count = thread_count + 1
end

local keys64 = {}

function init(args)
  system, op = args[1] or system, args[2] or op
  if args[3] then headers["Authorization"] = "Bearer " .. args[3] end  -- raftkv with tokens on
  if system == "etcd" then  -- encode once, so that the load generator costs the same for both
    for i = 0, KEYS - 1 do keys64[i] = base64(string.format("bench/%05d", i)) end
  end
end

function request()
  counter = counter + 1
  local n = (offset + counter) % KEYS
  if system == "etcd" then
    if op == "put" then
      return wrk.format("POST", "/v3/kv/put", headers, '{"key":"' .. keys64[n] .. '","value":"' .. VALUE64 .. '"}')
    end
    return wrk.format("POST", "/v3/kv/range", headers, '{"key":"' .. keys64[n] .. '"}')
  end
  local key = string.format("bench/%05d", n)
  if op == "put" then
    return wrk.format("PUT", "/kv/" .. key, headers, '{"value":"' .. VALUE .. '"}')
  end
  return wrk.format("GET", "/kv/" .. key, headers)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format('{"requests_per_s": %.1f, "p50_ms": %.3f, "p99_ms": %.3f, "non_2xx": %d, "socket_errors": %d}\n',
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
