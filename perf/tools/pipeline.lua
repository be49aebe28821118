-- wrk script: each connection writes DEPTH pipelined 100-byte publishes at once and, once all
-- of them are answered, the next DEPTH (wrk's pipelining). The same requests for ipush and
-- nchan; only the path differs:
--   wrk -t1 -c1 -d8s -s perf/tools/pipeline.lua http://127.0.0.1:9001 -- ipush 100 1000
--   wrk -t1 -c1 -d8s -s perf/tools/pipeline.lua http://127.0.0.1:8080 -- nchan 100 1000
--   wrk -t1 -c1 -d8s -s perf/tools/pipeline.lua http://127.0.0.1:9001 -- batch 4 1000 1000
-- args: server (ipush | nchan | batch: ipush's POST /pub/batch), DEPTH (requests in flight),
-- USERS (destinations cycled over), LINES (messages per /pub/batch request; messages/s is
-- wrk's requests/s times LINES).
local server, depth, users, lines
local n = 0
local bodies = string.rep("x", 100)

init = function(args)
  server = args[1] or "ipush"
  depth = tonumber(args[2] or "100")
  users = tonumber(args[3] or "1000")
  lines = tonumber(args[4] or "1000")
end

local function batch()
  local l = {}
  for k = 1, lines do
    l[k] = '{"to":"pp' .. (n % users) .. '","from":"op","b":"' .. bodies .. '"}\n'
    n = n + 1
  end
  return wrk.format("POST", "/pub/batch", { ["Content-Type"] = "application/x-ndjson" }, table.concat(l))
end

local function path(i)
  if server == "nchan" then
    return "/pub/pp" .. i
  end
  return "/pub?to=pp" .. i .. "&from=op"
end

-- A ring of ready-made buffers (building 1000-line bodies in Lua per request would load
-- the client more than the server).
local ring, at = {}, 0

local function build()
  local r = {}
  for k = 1, depth do
    if server == "batch" then
      r[k] = batch()
    else
      r[k] = wrk.format("POST", path(n % users), nil, bodies)
      n = n + 1
    end
  end
  return table.concat(r)
end

request = function()
  if #ring < 64 then
    ring[#ring + 1] = build()
    return ring[#ring]
  end
  at = at % #ring + 1
  return ring[at]
end

-- Non-2xx answers are counted by wrk ("Non-2xx or 3xx responses"); fail loudly on them.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("requests %d, errors connect %d read %d write %d status %d timeout %d\n",
    summary.requests, e.connect, e.read, e.write, e.status, e.timeout))
end
