-- wrk script for bench/ingest.py: replays pre-signed pushes, each with its own msg_id.
-- The file holds one request per line: path \t app-id \t event-sign \t body.
local requests = {}
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local n = tonumber(args[2]) or 1
  local i = 0
  for line in io.lines(args[1]) do
    if i % n == id then
      local path, app, sig, body = line:match("([^\t]+)\t([^\t]+)\t([^\t]+)\t(.*)")
      requests[#requests + 1] = wrk.format("POST", path,
        {["app-id"] = app, ["event-sign"] = sig, ["Content-Type"] = "application/json"}, body)
    end
    i = i + 1
  end
  cursor = 0
  wrapped = 0
end

function request()
  cursor = cursor + 1
  if cursor > #requests then cursor = 1; wrapped = wrapped + 1 end
  return requests[cursor]
end

function done(summary, latency, requests_)
  local wraps = 0
  for _, t in ipairs(threads) do wraps = wraps + (t:get("wrapped") or 0) end
  io.write(string.format('{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"non_2xx": %d, "errors": %d, "wrapped": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    wraps))
end
