-- Shared by every scenario script (loaded with dofile; wrk runs in bench/wrk/):
-- thread numbering, the arguments, a count of statuses per thread, and the
-- summary that the harness reads (one line starting with BENCH_RESULT).
--
-- Arguments after `--`: <data directory> <wrk threads> <run tag> <products>

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("thread_id", #threads)
end

statuses = {}

function count(status)
  statuses[status] = (statuses[status] or 0) + 1
end

function response(status, headers, body)
  count(status)
end

function arguments(args)
  data_dir, nthreads, tag, products = args[1], tonumber(args[2]), args[3], tonumber(args[4])
end

function read_lines(name)
  local lines = {}
  for line in io.lines(data_dir .. "/" .. name) do
    lines[#lines + 1] = line
  end
  return lines
end

function header(headers, name)
  for key, value in pairs(headers) do
    if string.lower(key) == name then
      return value
    end
  end
  return nil
end

-- Tokens, one per seeded user, served round-robin: thread t takes t, t + n, ...
function load_tokens()
  tokens = read_lines("tokens.txt")
  token_index = thread_id
end

function next_token()
  local token = tokens[(token_index - 1) % #tokens + 1]
  token_index = token_index + nthreads
  return token
end

-- Products this thread alone updates: line i of patch.txt ("id version token",
-- the token being the owner's)
-- belongs to thread ((i - 1) mod n) + 1. A product is taken off the queue
-- when a PATCH for it is sent and comes back with the version of its 200's
-- ETag, so the If-Match sent is always the current version: no 412.
function load_owned_products()
  queue, head, tail, in_flight = {}, 1, 0, {}
  for i, line in ipairs(read_lines("patch.txt")) do
    if (i - 1) % nthreads == thread_id - 1 then
      local id, version, token = string.match(line, "^(%d+) (%d+) (%S+)$")
      tail = tail + 1
      queue[tail] = { id = id, version = tonumber(version), token = token }
    end
  end
  patches = 0
end

function patch_request()
  if head > tail then
    error("every product of this thread is in flight: give the PATCH scenario more products")
  end
  local product = queue[head]
  queue[head] = nil
  head = head + 1
  in_flight[product.id] = product
  patches = patches + 1
  local body = string.format('{"price":"%d.%02d"}', 10 + patches % 500, patches % 100)
  return wrk.format("PATCH", "/api/v1/products/" .. product.id, {
    ["Authorization"] = "Bearer " .. product.token,
    ["Content-Type"] = "application/json",
    ["If-Match"] = '"' .. product.version .. '"',
  }, body)
end

-- Puts a product back on the queue when this response is a PATCH's answer.
-- Anything but a 200 leaves its version unknown: it leaves the rotation.
function patch_response(status, headers, body)
  local etag = header(headers, "etag")
  if etag == nil then
    return
  end
  local id = string.match(body, '^{"id":%s*(%d+)')
  local product = id and in_flight[id]
  if product == nil then
    return
  end
  in_flight[id] = nil
  if status == 200 then
    product.version = tonumber(string.match(etag, '"(%d+)"'))
    tail = tail + 1
    queue[tail] = product
  end
end

creates = 0

function create_request()
  creates = creates + 1
  local body = string.format(
    '{"name":"Bench item %d-%d","description":"Made by the benchmark.",' ..
      '"price":"%d.%02d","tax":"1.90","sku":"B%s-%d-%d"}',
    thread_id, creates, 10 + creates % 90, creates % 100, tag, thread_id, creates)
  return wrk.format("POST", "/api/v1/products", {
    ["Authorization"] = "Bearer " .. next_token(),
    ["Content-Type"] = "application/json",
  }, body)
end

function done(summary, latency, requests)
  local codes = {}
  for _, thread in ipairs(threads) do
    local counted = thread:get("statuses") or {}
    for code, n in pairs(counted) do
      codes[code] = (codes[code] or 0) + n
    end
  end
  local parts = {}
  for code, n in pairs(codes) do
    parts[#parts + 1] = string.format('"%d": %d', code, n)
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
      '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}, ' ..
      '"statuses": {%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, table.concat(parts, ", ")))
end
