-- soak.lua: the wrk script of bench/soak.sh (one phase of the soak; see that script's header).
--
-- Each wrk thread has one connection, so it has at most one request in flight: `pending` is always the request
-- the next response answers. A thread sends a fixed cycle of requests (hello, echo with bodies, misbehave
-- routes; a smooth weighted round-robin, each thread starting at another place in it), tallies every response
-- as "route expected got", and stops at exactly its share of SOAK_REQUESTS, touching SOAK_MARKS/ID so that
-- soak.sh can end wrk (whose main thread otherwise sleeps through the whole --duration). done() prints:
--   soak-route NAME EXPECTED GOT COUNT   one line per route and outcome (GOT is the status, or
--                                        STATUS-wrong-body when the body is not what the route must return)
--   soak-answered N                      responses counted by the threads
--   soak-errors CONNECT READ WRITE TIMEOUT

local total = tonumber(os.getenv("SOAK_REQUESTS") or "")
local thread_count = tonumber(os.getenv("SOAK_THREADS") or "")
local marks = os.getenv("SOAK_MARKS")
if not total or not thread_count or not marks then
  error("soak.lua: SOAK_REQUESTS, SOAK_THREADS and SOAK_MARKS must be set")
end

-- The mix, weights out of 40. check(body) is true when the body is the one the route must answer.
local mix = {
  { name = "hello GET /", host = "hello.test", method = "GET", path = "/", expected = 200, weight = 14,
    check = function(body) return body:find("Hello, World!", 1, true) ~= nil end },
  { name = "echo GET", host = "echo.test", method = "GET", path = "/echo/get?x=1", bytes = 0, expected = 200,
    weight = 2 },
  { name = "echo POST 100 B", host = "echo.test", method = "POST", path = "/echo/small", bytes = 100,
    expected = 200, weight = 4 },
  { name = "echo POST 4 KiB", host = "echo.test", method = "POST", path = "/echo/medium", bytes = 4096,
    expected = 200, weight = 4 },
  { name = "echo POST 64 KiB", host = "echo.test", method = "POST", path = "/echo/large", bytes = 65536,
    expected = 200, weight = 2 },
  { name = "misbehave /trap", host = "misbehave.test", method = "GET", path = "/trap", expected = 500, weight = 2 },
  { name = "misbehave /panic", host = "misbehave.test", method = "GET", path = "/panic", expected = 500,
    weight = 2 },
  { name = "misbehave /bad-header", host = "misbehave.test", method = "GET", path = "/bad-header", expected = 500,
    weight = 2 },
  { name = "misbehave /no-start", host = "misbehave.test", method = "GET", path = "/no-start", expected = 500,
    weight = 2 },
  { name = "misbehave /count", host = "misbehave.test", method = "GET", path = "/count", expected = 200,
    weight = 2, check = function(body) return body == "1" end },
  { name = "misbehave /big?bytes=10000", host = "misbehave.test", method = "GET", path = "/big?bytes=10000",
    expected = 200, weight = 3, check = function(body) return #body == 10000 end },
  { name = "misbehave /alloc", host = "misbehave.test", method = "GET", path = "/alloc", expected = 500,
    weight = 1 },
}

-- main state: give each thread its id and its share
threads = {}
function setup(thread)
  table.insert(threads, thread)
  local id = #threads
  local share = math.floor(total / thread_count)
  if id <= total % thread_count then share = share + 1 end
  thread:set("id", id)
  thread:set("quota", share)
end

-- thread state
local cycle, position, pending

local function echo_check(bytes)
  local wanted = '"body_length":' .. bytes
  return function(body) return body:find(wanted, 1, true) ~= nil end
end

function init(args)
  local requests, weight_sum = {}, 0
  for _, route in ipairs(mix) do
    local body = nil
    if route.bytes and route.bytes > 0 then body = string.rep("soak", route.bytes / 4) end
    local check = route.check
    if route.bytes then check = echo_check(route.bytes) end
    table.insert(requests, {
      name = route.name, expected = route.expected, check = check, weight = route.weight, current = 0,
      request = wrk.format(route.method, route.path, { Host = route.host, Connection = "close" }, body),
    })
    weight_sum = weight_sum + route.weight
  end
  -- smooth weighted round-robin (as nginx's upstreams): the routes interleave instead of coming in runs
  cycle = {}
  for _ = 1, weight_sum do
    local best = nil
    for _, r in ipairs(requests) do
      r.current = r.current + r.weight
      if not best or r.current > best.current then best = r end
    end
    best.current = best.current - weight_sum
    table.insert(cycle, best)
  end
  position = ((id - 1) * 7) % #cycle
  answered = 0
  tally = {}
end

function request()
  position = position % #cycle + 1
  pending = cycle[position]
  return pending.request
end

function response(status, headers, body)
  if answered >= quota then return end
  answered = answered + 1
  local got = tostring(status)
  if status == pending.expected and pending.check and not pending.check(body or "") then
    got = got .. "-wrong-body"
  end
  local key = pending.name .. "\t" .. pending.expected .. "\t" .. got
  tally[key] = (tally[key] or 0) + 1
  if answered == quota then
    local mark = io.open(marks .. "/" .. id, "w")
    if mark then mark:close() end
    wrk.thread:stop()
  end
end

-- main state again, once every thread has stopped
function done(summary, latency, requests)
  local sums, keys, answered_sum = {}, {}, 0
  for _, thread in ipairs(threads) do
    answered_sum = answered_sum + (thread:get("answered") or 0)
    for key, count in pairs(thread:get("tally") or {}) do
      if not sums[key] then table.insert(keys, key); sums[key] = 0 end
      sums[key] = sums[key] + count
    end
  end
  table.sort(keys)
  for _, key in ipairs(keys) do io.write("soak-route\t", key, "\t", sums[key], "\n") end
  io.write("soak-answered\t", answered_sum, "\n")
  local e = summary.errors
  io.write(string.format("soak-errors\t%d\t%d\t%d\t%d\n", e.connect, e.read, e.write, e.timeout))
end
