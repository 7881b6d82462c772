-- wrk script: report ingest and batch sync, with a fresh realistic body for every request.
--
--   wrk ... -s bench/reports.lua URL -- DATAFILE MODE EXPECT SERVER_EPOCH SALT [BATCH]
--
-- DATAFILE  one patient a line, tab separated: id, patient token, the common and the serious
--           side effects of the patient's drugs (symptom codes, comma separated), the vitals
--           measured on those drugs (comma separated), baseline weight in kg (may be empty)
-- MODE      "single": POST /v1/patients/{id}/reports, one report
--           "batch":  POST /v1/patients/{id}/reports/batch, BATCH reports (default 100)
--           "baseline": POST /reports, one report with "patient_id" added (bench/baseline_app.py)
-- EXPECT    the status every response must have (201 single, 200 batch, echo app and baseline)
-- SERVER_EPOCH  the server's clock (unix seconds) when the run started: recorded_at is "now" on
--           that clock, never in the future (the API refuses > 5 minutes ahead)
-- SALT      8 hex digits unique to this wrk run: client_report_id = SALT-THREAD-4rrr-Vrrr-COUNTER,
--           a valid UUIDv4 string that no other request of the run (or an earlier run) repeats
--
-- Each request picks a random patient and uses that patient's own token. Bodies: 1-5 symptoms
-- from the patient's drugs, common ones graded mostly 0-2 and serious ones almost always 0, vitals
-- in most reports, and in ALERT_P of them a value that raises an alert (a grade 3, SpO2 91 % or
-- 38.4 degC); with the trend rule (a symptom 2 grades worse than last time) about one report in
-- five raises an alert ("alert_share" in results.json counts the responses with advice).
-- Debugging: BENCH_DUMP=/path/file makes each thread write its first request body there.
-- done() prints one line "BENCH_JSON {...}" with the counts run.py reads.

local threads = {}

function setup(thread)
   threads[#threads + 1] = thread
   thread:set("tid", #threads)
end

-- Split on a one-character separator, keeping empty fields ("a,,b" has three).
local function split(s, sep)
   local out = {}
   if s == nil or s == "" then return out end
   local from = 1
   while true do
      local i = string.find(s, sep, from, true)
      if not i then
         out[#out + 1] = string.sub(s, from)
         return out
      end
      out[#out + 1] = string.sub(s, from, i - 1)
      from = i + 1
   end
end

function init(args)
   local datafile = args[1]
   mode = args[2]
   expect = tonumber(args[3])
   clock_offset = tonumber(args[4]) - os.time()
   salt = args[5]
   batch_size = tonumber(args[6] or "100")
   -- read back by done() through thread:get
   sent, responses, errors, advised, created, duplicate, rejected = 0, 0, 0, 0, 0, 0, 0
   sample = nil
   counter = 0
   math.randomseed(tonumber(salt, 16) + (tid or 1) * 7919)
   for _ = 1, 10 do math.random() end

   patients = {}
   for line in io.lines(datafile) do
      local f = split(line, "\t")
      if #f >= 2 then
         local p = {
            codes = split(f[3], ","),
            vitals = split(f[5], ","),
            weight = tonumber(f[6]) or 70.0,
            headers = {
               ["Authorization"] = "Bearer " .. f[2],
               ["Content-Type"] = "application/json",
            },
         }
         p.id = f[1]
         p.path = "/v1/patients/" .. f[1] .. (mode == "batch" and "/reports/batch" or "/reports")
         if mode == "baseline" then p.path = "/reports" end
         p.serious = {}
         for _, code in ipairs(split(f[4], ",")) do
            p.codes[#p.codes + 1] = code
            p.serious[code] = true
         end
         p.order = {}
         for i = 1, #p.codes do p.order[i] = i end
         patients[#patients + 1] = p
      end
   end
   assert(#patients > 0, "no patients in " .. datafile)
end

local random, format, concat = math.random, string.format, table.concat
local ALERT_P = 0.12
local dump = os.getenv("BENCH_DUMP")

local function uuid4()
   counter = counter + 1
   return format("%s-%04x-4%03x-%04x-%012x", salt, tid or 1, random(0, 4095),
                 32768 + random(0, 16383), counter)
end

local function grade(serious)
   local r = random()
   if serious then
      if r < 0.97 then return 0 end
      return 1
   end
   if r < 0.5 then return 0 elseif r < 0.88 then return 1 end
   return 2
end

local function vital(name, p)
   if name == "temperature_c" then return format("%.1f", 36.1 + random() * 1.4)
   elseif name == "systolic_bp" then return tostring(random(105, 135))
   elseif name == "diastolic_bp" then return tostring(random(65, 85))
   elseif name == "heart_rate" then return tostring(random(60, 100))
   elseif name == "weight_kg" then return format("%.1f", p.weight - 0.5 + random())
   elseif name == "spo2" then return tostring(random(95, 99))
   end
   return nil
end

-- One report body (a JSON object) for patient p, recorded at unix time t.
local function report(p, t)
   local kind = 0
   if random() < ALERT_P then kind = random(1, 3) end -- 1 grade 3, 2 SpO2 91, 3 fever 38.4
   local n = random(1, 5)
   if n > #p.codes then n = #p.codes end
   local order = p.order
   local symptoms = {}
   for i = 1, n do
      local j = random(i, #order)
      order[i], order[j] = order[j], order[i]
      local code = p.codes[order[i]]
      local g = grade(p.serious[code])
      if kind == 1 and i == 1 then g = 3 end
      symptoms[i] = '{"code":"' .. code .. '","grade":' .. g .. '}'
   end
   local vitals = {}
   if kind >= 2 or random() < 0.85 then
      for _, name in ipairs(p.vitals) do
         local v = vital(name, p)
         if kind == 2 and name == "spo2" then v = "91" end
         if kind == 3 and name == "temperature_c" then v = "38.4" end
         if v then vitals[#vitals + 1] = '"' .. name .. '":' .. v end
      end
      -- the patient has a thermometer and a pulse oximeter even when the drug does not ask
      if kind == 2 and not string.find(concat(vitals, ","), '"spo2"', 1, true) then
         vitals[#vitals + 1] = '"spo2":91'
      end
      if kind == 3 and not string.find(concat(vitals, ","), '"temperature_c"', 1, true) then
         vitals[#vitals + 1] = '"temperature_c":38.4'
      end
   end
   local parts = {
      '{"client_report_id":"', uuid4(),
      '","recorded_at":"', os.date("!%Y-%m-%dT%H:%M:%S+00:00", t),
      '","symptoms":[', concat(symptoms, ","), "]",
   }
   if #vitals > 0 then parts[#parts + 1] = ',"vitals":{' .. concat(vitals, ",") .. "}" end
   parts[#parts + 1] = "}"
   return concat(parts)
end

function request()
   sent = sent + 1
   local p = patients[random(1, #patients)]
   local now = os.time() + clock_offset
   local body
   if mode == "batch" then
      -- an overnight sync: reports every ~5 minutes up to now, sent in one request
      local items = {}
      for i = 1, batch_size do
         items[i] = report(p, now - (batch_size - i) * 300 - random(0, 200))
      end
      body = '{"reports":[' .. concat(items, ",") .. "]}"
   elseif mode == "baseline" then
      body = '{"patient_id":"' .. p.id .. '",' .. string.sub(report(p, now - random(0, 600)), 2)
   else
      body = report(p, now - random(0, 600))
   end
   if dump then
      local f = io.open(dump, "w")
      if f then f:write(body) f:close() end
      dump = nil
   end
   return wrk.format("POST", p.path, p.headers, body)
end

local function count(body, needle)
   local n, from = 0, 1
   while true do
      local i = string.find(body, needle, from, true)
      if not i then return n end
      n, from = n + 1, i + #needle
   end
end

function response(status, headers, body)
   responses = responses + 1
   if status ~= expect then
      errors = errors + 1
      if sample == nil then sample = status .. " " .. string.sub(body or "", 1, 600) end
      return
   end
   if mode == "batch" then
      created = created + count(body, '"status":"created"')
      duplicate = duplicate + count(body, '"status":"duplicate"')
      local bad = count(body, '"status":"rejected"')
      rejected = rejected + bad
      if bad > 0 and sample == nil then sample = status .. " " .. string.sub(body, 1, 600) end
   elseif string.find(body, '"advice":{', 1, true) then
      advised = advised + 1
   end
end

local function json_string(s)
   if s == nil then return "null" end
   return '"' .. string.gsub(s, '[%c"\\]', function(c)
      return format("\\u%04x", string.byte(c))
   end) .. '"'
end

function done(summary, latency, requests)
   local t = { sent = 0, responses = 0, errors = 0, advised = 0, created = 0, duplicate = 0,
               rejected = 0 }
   local first
   for _, thread in ipairs(threads) do
      for k in pairs(t) do t[k] = t[k] + (thread:get(k) or 0) end
      first = first or thread:get("sample")
   end
   local e = summary.errors
   io.write(format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,'
         .. '"p99_us":%d,"max_us":%d,"mean_us":%.1f,"connect":%d,"read":%d,"write":%d,'
         .. '"timeout":%d,"status_errors":%d,"sent":%d,"responses":%d,"unexpected":%d,"advised":%d,'
         .. '"created":%d,"duplicate":%d,"rejected":%d,"sample":%s}\n',
      summary.requests, summary.duration, summary.bytes, latency:percentile(50),
      latency:percentile(90), latency:percentile(99), latency.max, latency.mean, e.connect,
      e.read, e.write, e.timeout, e.status, t.sent, t.responses, t.errors, t.advised, t.created,
      t.duplicate, t.rejected, json_string(first)))
end
