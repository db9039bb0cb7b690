-- Prints wrk's own figures as one JSON line at the end of a run, so
-- bench/load.sh reads exact microseconds instead of wrk's rounded text.
-- Only `done` is defined: wrk keeps its fast path (no per-request Lua).
-- "percentiles" is the curve bench/report.py plots (closed-loop, so a
-- stall's cost is understated; the open-loop oha curves are the honest ones).
local points = { 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99 }
done = function(summary, latency, requests)
  local e = summary.errors
  local curve = {}
  for i, p in ipairs(points) do
    curve[i] = string.format('"%g":%d', p, latency:percentile(p))
  end
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d},' ..
    '"percentiles_us":{%s},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max,
    table.concat(curve, ","),
    e.connect, e.read, e.write, e.status, e.timeout))
end
