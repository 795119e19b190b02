-- wrk script: PUT /kv/bench/NNNNN with a 100-byte value, keys spread over 10,000 names.
--   wrk -t2 -c64 -d20s --latency -s tests/http/wrk_put.lua http://127.0.0.1:PORT
-- Each thread walks the key space from its own offset so threads do not collide in step.
local KEYS = 10000
local body = '{"value":"' .. string.rep("x", 100) .. '"}'
local headers = { ["Content-Type"] = "application/json" }
local counter = 0
local thread_count = 0

function setup(thread)
  thread:set("offset", thread_count * 5003)
  thread_count = thread_count + 1
end

function request()
  counter = counter + 1
  local key = string.format("bench/%05d", (offset + counter) % KEYS)
  return wrk.format("PUT", "/kv/" .. key, headers, body)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format("requests/s: %.1f  p50: %.2f ms  p99: %.2f ms  non-2xx: %d  socket errors: %d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
