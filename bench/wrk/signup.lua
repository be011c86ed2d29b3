-- W3: every request signs up a fresh address, with the headers a browser sends on a same-origin
-- form post. Addresses stay unique across threads and runs.
local counter = 0

-- BENCH_WRK_TAG tells apart wrk processes started in the same second (their seeds match).
local run_tag = (os.getenv("BENCH_RUN") or tostring(os.time())) .. (os.getenv("BENCH_WRK_TAG") or "")

math.randomseed(os.time())

function setup(thread)
  thread:set("thread_tag", tostring(math.random(1, 1e9)))
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.headers["Sec-Fetch-Site"] = "same-origin"
  wrk.headers["Origin"] = "http://" .. wrk.host .. ":" .. wrk.port
end

function request()
  counter = counter + 1
  local body = "email=w3-" .. run_tag .. "-" .. thread_tag .. "-" .. counter .. "%40bench.example"
  return wrk.format(nil, "/signup", nil, body)
end
