-- wrk script: one GET, the same request every time (the alert queue, a deep page of it by
-- cursor, a patient's report history).
--
--   wrk ... -s bench/get.lua URL -- TOKENFILE PATH EXPECT
--
-- TOKENFILE  a file holding the bearer token (a clinician of one team, or the patient)
-- PATH       path and query, e.g. /v1/alerts or /v1/alerts?cursor=...
-- EXPECT     the status every response must have (200)
-- done() prints one line "BENCH_JSON {...}" with the counts run.py reads.

local threads = {}

function setup(thread)
   threads[#threads + 1] = thread
end

function init(args)
   local f = assert(io.open(args[1], "r"))
   local token = f:read("*l")
   f:close()
   expect = tonumber(args[3])
   sent, responses, errors = 0, 0, 0
   sample = nil
   wrk.method = "GET"
   wrk.path = args[2]
   wrk.headers["Authorization"] = "Bearer " .. token
   wrk.headers["Accept"] = "application/json"
   req = wrk.format()
end

-- the same bytes every time; a function only to count what was sent
function request()
   sent = sent + 1
   return req
end

function response(status, headers, body)
   responses = responses + 1
   if status ~= expect then
      errors = errors + 1
      if sample == nil then sample = status .. " " .. string.sub(body or "", 1, 600) end
   end
end

local function json_string(s)
   if s == nil then return "null" end
   return '"' .. string.gsub(s, '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end) .. '"'
end

function done(summary, latency, requests)
   local sent, responses, unexpected, first = 0, 0, 0, nil
   for _, thread in ipairs(threads) do
      sent = sent + (thread:get("sent") or 0)
      responses = responses + (thread:get("responses") or 0)
      unexpected = unexpected + (thread:get("errors") or 0)
      first = first or thread:get("sample")
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,'
         .. '"p99_us":%d,"max_us":%d,"mean_us":%.1f,"connect":%d,"read":%d,"write":%d,'
         .. '"timeout":%d,"status_errors":%d,"sent":%d,"responses":%d,"unexpected":%d,'
         .. '"sample":%s}\n',
      summary.requests, summary.duration, summary.bytes, latency:percentile(50),
      latency:percentile(90), latency:percentile(99), latency.max, latency.mean, e.connect,
      e.read, e.write, e.timeout, e.status, sent, responses, unexpected, json_string(first)))
end
