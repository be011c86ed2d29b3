-- The soak's mix, as fast as possible (to find its peak): 30% new visitors, 60% remembered
-- visitors (cookie from SOAK_COOKIE), 10% signups of fresh addresses.
local counter = 0
local cookie = os.getenv("SOAK_COOKIE") or ""
math.randomseed(os.time())

function setup(thread)
  thread:set("thread_tag", tostring(math.random(1, 1e9)))
end

function request()
  counter = counter + 1
  local pick = counter % 10
  if pick < 3 then
    return wrk.format("GET", "/")
  elseif pick < 9 then
    return wrk.format("GET", "/", { ["Cookie"] = cookie })
  end
  local origin = "http://" .. wrk.host .. ":" .. wrk.port
  local headers = {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Origin"] = origin,
    ["Sec-Fetch-Site"] = "same-origin",
  }
  local body = "email=mix-" .. thread_tag .. "-" .. counter .. "%40bench.example"
  return wrk.format("POST", "/signup", headers, body)
end
