#!/usr/bin/env bash
# The load half of `make bench`: the same small-response upstream behind
# portico, nginx, haproxy and Caddy, one proxy core each, one wrk run each;
# prints req/s, p50, p99 and the ratios of portico to each, and
# writes them to target/bench/load.json. Figures are measured and reported,
# never asserted: the script fails only when it cannot measure.
#
# Placement (two cores assumed; the same for all three proxies):
#   core 0: the proxy under test and nothing else we start (portico's
#           access-log thread included), so its req/s is per proxy core.
#   core 1: wrk (one thread) and the upstream (one thread).
# The upstream has to run somewhere; next to the proxy it would take a
# share of the very core being measured, and differently so for faster
# proxies. Next to wrk it costs the same per request whichever proxy is in
# front. The price: if core 1 saturates first, every proxy is capped alike
# and the ratios shrink toward 1. The report shows the CPU the proxy and
# the load side (wrk + upstream) used, and gives req/s per proxy CPU-second
# besides raw req/s, so such a run is visible as one. It also shows CPU
# that other processes took meanwhile (a shared machine), and each
# measurement first waits for both cores to be quiet.
#
# Fairness: each proxy logs every request (portico: JSON to stdout; nginx:
# a JSON log_format; haproxy: httplog to stdout; Caddy: its JSON access log
# to stdout; all to /dev/null), keeps
# connections to the upstream alive, adds X-Forwarded-For and a request id,
# and never closes client keep-alive connections on a request count.
#
# wrk is closed-loop: a slow response delays the next request on that
# connection, so its percentiles understate tail latency under stalls
# (coordinated omission), and at saturation they mostly measure queueing.
# Latency is therefore also measured open-loop: after its wrk run, each
# proxy gets oha at fixed request rates below saturation, with
# --latency-correction (a request's latency counts from when it was due
# to be sent, so a stall counts against every request scheduled behind
# it). The same phase against the upstream alone ("direct") gives the
# floor that the generator and the upstream account for.
#
# Knobs (environment):
#   BENCH_SECONDS      measured duration per proxy (10)
#   BENCH_WARMUP       warm-up seconds per proxy, not measured (3)
#   BENCH_CONNECTIONS  wrk connections (64)
#   BENCH_PROXIES      which proxies, in order ("portico nginx haproxy caddy
#                      traefik"); Caddy (Debian's package) and Traefik
#                      (built once from its Go module by
#                      bench/traefik/build.sh into <target>/bench-tools)
#                      run with GOMAXPROCS=1
#   BENCH_ROUNDS       rounds (3); each round measures every proxy once,
#                      in an order rotated by one per round. This VM's
#                      throughput drifts by about 10% over minutes, so one
#                      run of each is not enough: the report gives each
#                      proxy's median round and the median of the ratios
#                      taken within each round (its proxies ran minutes
#                      apart at most).
#   BENCH_BUILD        0: do not run cargo build, use existing binaries (1)
#   BENCH_BIN_DIR      where bench_upstream/bench_proxy are
#                      (<cargo target dir>/release/examples)
#   BENCH_PORTICO      the portico binary measured (<cargo target dir>/
#                      release/portico), run as users run it: `portico run
#                      --manifests` with one Ingress to the upstream
#                      (bench/routes.py one), one tokio worker
#                      (TOKIO_WORKER_THREADS=1), the access log on stdout;
#                      in TLS modes the certificate is a Secret and
#                      --default-ssl-certificate. `example`: the
#                      bench_proxy example instead (one current-thread
#                      runtime, the dataplane alone), for comparison. The
#                      policy modes (BENCH_POLICIES) always run the example.
#   BENCH_OUT          the JSON report (<cargo target dir>/bench/load.json)
#   BENCH_QUIET_TIMEOUT seconds to wait for other load on the cores to stop
#                      before each measurement (120)
#   BENCH_ACCESS_LOG   off: portico runs without its access log; diagnosis
#                      only (what the log costs), not a fair comparison
#   BENCH_LATENCY_RATES fixed rates, req/s, for the open-loop latency phase
#                      ("10000 30000": about a sixth and a half of what
#                      each proxy serves at saturation here); empty skips it
#   BENCH_LATENCY_SECONDS seconds per rate per proxy per round (10)
#   OHA                the oha binary; by default the pinned oha (OHA_VERSION) is built
#                      once with cargo install into <cargo target dir>/bench-tools
#   BENCH_POLICIES     on: the route carries an IP allow-list (ten ranges),
#                      CORS for one origin and basic auth ({SHA} htpasswd,
#                      the cheapest hash nginx checks on every request;
#                      portico caches verified credentials whatever the
#                      hash), and wrk sends the Origin and Authorization
#                      headers; compares portico with nginx doing the same
#                      (haproxy is left out). off (default): no policies.
#                      limit: one local rate limit per client address that
#                      no request reaches (the check's cost); limit-keys:
#                      the limit keyed by an x-client header wrk varies
#                      over 100,000 values (the per-Lua-request cost lands
#                      on wrk's core, not the proxy's). Both are for
#                      BENCH_PROXIES=portico, against a run with off.
#                      auth: every request first asks an external auth
#                      service (the bench upstream, on the load core) as
#                      auth-url does; auth-cache: with the auth cache on
#                      global-limit: one global rate limit per client
#                      address that no request reaches, counted in a
#                      redis-server the script starts on the load core
#                      (installed from Debian when missing): every request
#                      makes one script call, so against a run with off it
#                      shows the added p50/p99 (wrk's, and open-loop at
#                      BENCH_LATENCY_RATES) and proxy CPU per request
#   BENCH_TLS          off (plain HTTP), keepalive (HTTPS keep-alive req/s)
#                      or handshake (every request on a new connection: full
#                      TLS handshakes per second; wrk does not resume
#                      sessions). Both proxies serve the same ECDSA P-256
#                      certificate, TLS 1.2 and 1.3, session cache on; the
#                      TLS modes compare portico with nginx only; the
#                      latency phase runs in keepalive mode, not in
#                      handshake mode. All five proxies take the TLS modes:
#                      haproxy (ssl-default-bind-options ssl-min-ver
#                      TLSv1.2, its default session cache), Caddy and
#                      Traefik (their default session tickets/cache) on the
#                      same certificate; HTTP/1.1 only (wrk sends no ALPN;
#                      Caddy's HTTP/3 is off so it opens no UDP port).
#   BENCH_CONN         keepalive (default) or close: wrk sends
#                      "Connection: close", so every request opens a new TCP
#                      connection to the proxy (the proxy still keeps its
#                      upstream connections alive); no latency phase.
#   BENCH_BODY         none (default); up: every request a POST of a 1 MiB
#                      body; down: every request a GET of a 1 MiB response
#                      (bench_upstream's /1m). No latency phase.
#   BENCH_ROUTES       none (default); hosts: 10,000 virtual hosts, wrk
#                      varying the Host header over all of them; regex: 100
#                      regex path routes, requests matching the last one.
#                      bench/routes.py writes each proxy's configuration
#                      (Portico's as manifests for the binary). No
#                      latency phase.
#   BENCH_H2           on: HTTP/2 over TLS (ALPN h2; implies
#                      BENCH_TLS=keepalive) with h2load (Debian's
#                      nghttp2-client) instead of wrk: BENCH_CONNECTIONS
#                      streams in flight, BENCH_H2_STREAMS (8) per
#                      connection; percentiles from h2load's per-request
#                      log. No latency phase.
set -euo pipefail

OHA_VERSION=1.16.0

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
export PATH="$PATH:/usr/sbin:/sbin"

seconds=${BENCH_SECONDS:-10}
warmup=${BENCH_WARMUP:-3}
connections=${BENCH_CONNECTIONS:-64}
proxies=${BENCH_PROXIES:-portico nginx haproxy caddy traefik}
rounds=${BENCH_ROUNDS:-3}
latency_rates=${BENCH_LATENCY_RATES-10000 30000}
latency_seconds=${BENCH_LATENCY_SECONDS:-10}
proxy_core=0
load_core=1
tls=${BENCH_TLS:-off}
scheme=http
wrk_extra=()
curl_extra=()
policies=${BENCH_POLICIES:-off}
case $policies in
  off) ;;
  on)
    # user bench, password bench
    wrk_extra+=(-H "Authorization: Basic YmVuY2g6YmVuY2g=" -H "Origin: https://app.bench.test")
    curl_extra=(-u bench:bench)
    latency_rates=
    ;;
  limit | limit-keys | auth | auth-cache)
    # Portico only: nginx's limit_req is a different mode of comparison.
    latency_rates=
    ;;
  global-limit)
    # Portico only, keeping the open-loop latency phase: the added
    # latency per request is what this mode is for.
    ;;
  *)
    printf 'load: error: BENCH_POLICIES must be on, off, limit, limit-keys, auth, auth-cache or global-limit\n' >&2
    exit 2
    ;;
esac
body=${BENCH_BODY:-none}
path=/
case $body in
  none) ;;
  up) latency_rates= ;;
  down)
    path=/1m
    latency_rates=
    ;;
  *)
    printf 'load: error: BENCH_BODY must be none, up or down\n' >&2
    exit 2
    ;;
esac
routes=${BENCH_ROUTES:-none}
case $routes in
  none) ;;
  hosts)
    curl_extra+=(-H "Host: h0.bench.test")
    latency_rates=
    ;;
  regex)
    path=/r99/abc/123
    wrk_extra+=(-H "Host: bench.test")
    curl_extra+=(-H "Host: bench.test")
    latency_rates=
    ;;
  *)
    printf 'load: error: BENCH_ROUTES must be none, hosts or regex\n' >&2
    exit 2
    ;;
esac
[[ $routes == none || $body == none ]] || {
  printf 'load: error: BENCH_ROUTES and BENCH_BODY do not combine\n' >&2
  exit 2
}
h2=${BENCH_H2:-off}
h2_streams=${BENCH_H2_STREAMS:-8}
case $h2 in
  off) ;;
  on)
    tls=keepalive
    latency_rates=
    ;;
  *)
    printf 'load: error: BENCH_H2 must be on or off\n' >&2
    exit 2
    ;;
esac
conn=${BENCH_CONN:-keepalive}
case $conn in
  keepalive) ;;
  close)
    wrk_extra+=(-H "Connection: close")
    latency_rates=
    ;;
  *)
    printf 'load: error: BENCH_CONN must be keepalive or close\n' >&2
    exit 2
    ;;
esac
case $tls in
  off) ;;
  keepalive) scheme=https ;;
  handshake)
    scheme=https
    wrk_extra+=(-H "Connection: close")
    latency_rates=
    ;;
  *)
    printf 'load: error: BENCH_TLS must be off, keepalive or handshake\n' >&2
    exit 1
    ;;
esac

log() { printf 'load: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# === install ===

# Runs apt-get only when a tool is missing. Packages are installed with
# services left stopped (policy-rc.d), so no nginx or haproxy stays behind
# listening on port 80.
install_tools() {
  local missing=()
  command -v nginx >/dev/null || missing+=(nginx)
  command -v haproxy >/dev/null || missing+=(haproxy)
  if [[ " $proxies " == *" caddy "* ]]; then
    command -v caddy >/dev/null || missing+=(caddy)
  fi
  command -v wrk >/dev/null || missing+=(wrk)
  [[ $h2 == off ]] || command -v h2load >/dev/null || missing+=(nghttp2-client)
  command -v taskset >/dev/null || missing+=(util-linux)
  command -v python3 >/dev/null || missing+=(python3)
  command -v curl >/dev/null || missing+=(curl)
  command -v openssl >/dev/null || missing+=(openssl)
  if [[ $policies == global-limit ]]; then
    command -v redis-server >/dev/null || missing+=(redis-server)
  fi
  ((${#missing[@]})) || return 0

  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  log "installing from Debian: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  local pkgs=() p
  for p in "${missing[@]}"; do
    # nginx-light is the smallest build where it exists (bookworm); later
    # releases fold it into nginx.
    if [[ $p == nginx ]] && apt-cache policy nginx-light 2>/dev/null | grep -q 'Candidate: [0-9]'; then
      p=nginx-light
    fi
    pkgs+=("$p")
  done
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    own_policy=1
  fi
  local rc=0
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2 || rc=$?
  ((own_policy)) && "${sudo[@]}" rm -f "$policy"
  ((rc == 0)) || die "apt-get install ${pkgs[*]} failed"
}

# oha, for the open-loop latency phase: a pinned version, built once into
# the cargo target directory (git-ignored, kept between runs).
install_oha() {
  oha=${OHA:-$target/bench-tools/bin/oha}
  [[ -n $latency_rates ]] || return 0
  if [[ -n ${OHA:-} ]] || "$oha" --version 2>/dev/null | grep -qx "oha $OHA_VERSION"; then
    return 0
  fi
  log "building oha $OHA_VERSION with cargo install (once; a few minutes)"
  cargo install oha --version "$OHA_VERSION" --locked --quiet --root "$target/bench-tools" ||
    die "cargo install oha $OHA_VERSION failed"
}

# === processes ===

tmp=
pids=()

cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    stop "$pid"
  done
  [[ -n $tmp ]] && rm -rf "$tmp"
}

# Stops one process we started: TERM, then KILL after 5 s.
stop() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

forget() {
  local pid=$1 kept=() p
  for p in "${pids[@]}"; do
    [[ $p == "$pid" ]] || kept+=("$p")
  done
  pids=("${kept[@]}")
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Polls until the URL answers 200; a bounded wait, not synchronisation by
# sleeping.
wait_ready() {
  local url=$1 pid=$2 i tries=100
  # 10,000 routes take some proxies seconds to load.
  [[ ${routes:-none} == none ]] || tries=1200
  for ((i = 0; i < tries; i++)); do
    kill -0 "$pid" 2>/dev/null || return 1
    if curl -kfsS -o /dev/null --max-time 1 "${curl_extra[@]}" "$url" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# The proxy's processes: the one we started and its children (nginx's
# worker). Their CPU time includes every thread's.
proxy_pids() {
  local pid=$1
  echo "$pid"
  cat /proc/"$pid"/task/*/children 2>/dev/null | tr ' ' '\n' | grep . || true
}

# One CPU sample: wall clock, per-core jiffies (task = user+nice+system,
# irq = irq+softirq, steal, total), the jiffies of the proxy's and the
# upstream's processes, and (in $out.procs) every other user-space
# process's, to tell how much of the machine went elsewhere.
sample() {
  local out=$1
  shift
  printf 'wall_ns=%s\nproxy_ticks=%s\nupstream_ticks=%s\nours=%s\n' \
    "$(date +%s%N)" "$(ticks "$@")" "$(ticks "$upstream_pid")" "$* $upstream_pid $$" >"$out"
  awk '/^cpu[0-9]+ / {
         task = $2 + $3 + $4; irq = $7 + $8
         printf "%s_task=%d\n%s_irq=%d\n%s_steal=%d\n", $1, task, $1, irq, $1, $9
         printf "%s_user=%d\n%s_sys=%d\n", $1, $2 + $3, $1, $4
         printf "%s_total=%d\n", $1, task + irq + $5 + $6 + $9
       }' /proc/stat >>"$out"
  # pid, ppid, start time, jiffies (own threads only). cat, not awk
  # on the glob: processes vanish between the glob and the read.
  cat /proc/[0-9]*/stat 2>/dev/null | awk '{
         i = index($0, ") "); while ((j = index(substr($0, i + 2), ") ")) > 0) i += j + 1
         split(substr($0, i + 2), f, " ")
         print $1, f[2], f[20], f[12] + f[13]
       }' >"$out.procs"
}

# User plus system jiffies of the given live processes, all threads.
ticks() {
  local sum=0 p f
  for p in "$@"; do
    f=$(sed 's/.*) //' /proc/"$p"/stat 2>/dev/null) || continue
    # After "(comm) ": field 3 (state) is $1, utime is $12, stime $13.
    sum=$((sum + $(awk '{print $12 + $13}' <<<"$f")))
  done
  echo "$sum"
}

# CPU seconds of this shell's waited-for children (`times`, second line):
# how wrk's CPU is read, since it is gone before it could be sampled.
children_cpu() {
  times >"$tmp/times"
  awk 'NR == 2 {
         t = 0
         for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
         printf "%.3f\n", t
       }' "$tmp/times"
}

# Waits (bounded) until neither core is busy with something else, since
# the machine may be shared (builds, other tests); measures anyway after
# BENCH_QUIET_TIMEOUT seconds, and the report flags foreign CPU use.
wait_quiet() {
  local limit=${BENCH_QUIET_TIMEOUT:-120} waited=0 a b busy
  while :; do
    a=$(awk '/^cpu[01] / {printf "%d %d ", $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat)
    sleep 1
    b=$(awk '/^cpu[01] / {printf "%d %d ", $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat)
    busy=$(awk -v a="$a" -v b="$b" 'BEGIN {
             split(a, x, " "); split(b, y, " "); m = 0
             for (i = 1; i <= 4; i += 2) { t = y[i + 1] - x[i + 1]; u = t ? (y[i] - x[i]) / t : 0; if (u > m) m = u }
             printf "%d", m * 100 }')
    ((busy < 15)) && return 0
    ((waited == 0)) && log "a core is ${busy}% busy with something else; waiting up to ${limit}s for quiet"
    waited=$((waited + 1))
    if ((waited >= limit)); then
      log "still ${busy}% busy; measuring anyway (see foreign CPU in the report)"
      return 0
    fi
  done
}

# === proxies ===

# Each start_* starts one proxy pinned to the proxy core, listening on
# $port, forwarding to $upstream, and sets $proxy_pid.

# Many routes (BENCH_ROUTES) for the other proxies: their rendered
# configuration rewritten in place.
more_routes() {
  [[ $routes == none ]] || python3 "$here/routes.py" "$routes" "$@" || die "routes.py $routes $1 failed"
}

start_portico() {
  local admin
  admin=$(free_port)
  if [[ $portico_as == binary ]]; then
    # As users run it: the release binary, its manifests in a directory,
    # one tokio worker (as the example's one thread and the single-worker
    # peers), the access log on stdout unless BENCH_ACCESS_LOG=off.
    local kind=one tls_args=()
    [[ $routes == none ]] || kind=$routes
    if [[ $tls != off ]]; then
      python3 "$here/routes.py" "$kind" portico "$tmp/manifests" "$upstream" "$tls_cert" "$tls_key" ||
        die "routes.py $kind portico failed"
      tls_args=(--default-ssl-certificate default/bench-tls)
    else
      python3 "$here/routes.py" "$kind" portico "$tmp/manifests" "$upstream" || die "routes.py $kind portico failed"
    fi
    # TLS modes: LISTEN_ADDR's port serves HTTPS, as with the example.
    local http_addr=127.0.0.1:$port https_addr=127.0.0.1:$(free_port)
    [[ $tls == off ]] || { https_addr=$http_addr; http_addr=127.0.0.1:$(free_port); }
    TOKIO_WORKER_THREADS=1 taskset -c "$proxy_core" "$portico_bin" run --manifests "$tmp/manifests" \
      --http-addr "$http_addr" --https-addr "$https_addr" \
      --admin-addr "127.0.0.1:$admin" --debug-addr off \
      --access-log "$([[ ${BENCH_ACCESS_LOG:-on} == off ]] && echo false || echo true)" "${tls_args[@]}" \
      >/dev/null 2>"$tmp/portico.err" &
    proxy_pid=$!
    return
  fi
  # The example; stdout is the access log.
  BENCH_TLS_CERT=${tls_cert:-} BENCH_TLS_KEY=${tls_key:-} \
    BENCH_POLICIES=$policies BENCH_HTPASSWD=$tmp/htpasswd BENCH_REDIS_URL=${redis_url:-} \
    taskset -c "$proxy_core" "$bin_dir/bench_proxy" \
    "127.0.0.1:$port" "127.0.0.1:$admin" "$upstream" \
    >/dev/null 2>"$tmp/portico.err" &
  proxy_pid=$!
}

start_nginx() {
  mkdir -p "$tmp/nginx"
  local listen_ssl='' ssl_conf=''
  if [[ $tls != off ]]; then
    listen_ssl=' ssl'
    [[ $h2 == off ]] || listen_ssl=' ssl http2'
    ssl_conf="ssl_certificate $tls_cert; ssl_certificate_key $tls_key; ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m; ssl_session_tickets on;"
  fi
  local http_policies='' location_policies=''
  if [[ $policies == on ]]; then
    # What ingress-nginx renders for allowlist-source-range, enable-cors
    # with one origin, and auth-type basic; the credential is not sent on.
    http_policies='map $http_origin $cors_origin { "https://app.bench.test" $http_origin; default ""; }'
    location_policies="allow 192.0.2.0/24; allow 198.51.100.0/24; allow 203.0.113.0/24; allow 100.64.0.0/10; allow 169.254.0.0/16; allow 224.0.0.0/4; allow 240.0.0.0/4; allow 2001:db8::/32; allow fd00::/8; allow 127.0.0.0/8; deny all; auth_basic bench; auth_basic_user_file $tmp/htpasswd; proxy_set_header Authorization \"\"; add_header Access-Control-Allow-Origin \$cors_origin always; add_header Access-Control-Allow-Credentials true always; add_header Vary Origin always;"
  fi
  sed -e "s|@DIR@|$tmp/nginx|g" -e "s|@PORT@|$port|g" -e "s|@UPSTREAM@|$upstream|g" \
    -e "s|@LISTEN_SSL@|$listen_ssl|g" -e "s|@SSL_CONF@|$ssl_conf|g" \
    -e "s|@HTTP_POLICIES@|$http_policies|g" -e "s|@POLICIES@|$location_policies|g" \
    "$here/nginx.conf.in" >"$tmp/nginx/nginx.conf"
  more_routes nginx "$tmp/nginx/nginx.conf"
  taskset -c "$proxy_core" nginx -e "$tmp/nginx/nginx-error.log" \
    -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" \
    >/dev/null 2>"$tmp/nginx.err" &
  proxy_pid=$!
}

start_haproxy() {
  local bind_ssl='' global_ssl='' proto=http
  if [[ $tls != off ]]; then
    # haproxy reads the certificate and key from one PEM file.
    cat "$tls_cert" "$tls_key" >"$tmp/haproxy.pem"
    bind_ssl=" ssl crt $tmp/haproxy.pem alpn http/1.1"
    [[ $h2 == off ]] || bind_ssl=" ssl crt $tmp/haproxy.pem alpn h2,http/1.1"
    global_ssl='ssl-default-bind-options ssl-min-ver TLSv1.2'
    proto=https
  fi
  sed -e "s|@PORT@|$port|g" -e "s|@UPSTREAM@|$upstream|g" -e "s|@CORE@|$proxy_core|g" \
    -e "s|@BIND_SSL@|$bind_ssl|g" -e "s|@GLOBAL_SSL@|$global_ssl|g" -e "s|@PROTO@|$proto|g" \
    "$here/haproxy.cfg.in" >"$tmp/haproxy.cfg"
  more_routes haproxy "$tmp/haproxy.cfg"
  # -db: foreground, one process. stdout is the request log.
  taskset -c "$proxy_core" haproxy -db -f "$tmp/haproxy.cfg" \
    >/dev/null 2>"$tmp/haproxy.err" &
  proxy_pid=$!
}

start_caddy() {
  # Go schedules goroutines on GOMAXPROCS threads: one, like the others'
  # one worker. X-Forwarded-For/-Proto/-Host and upstream keep-alive are
  # Caddy's defaults; the request id and X-Real-IP are added as the others
  # add them. The admin API is off so it opens no second port. Go's
  # transport keeps only a few idle upstream connections per host unless
  # told (2 in Go, 32 in newer Caddy): with more client connections than
  # that, every request past it dials the upstream anew, so the idle pool is
  # sized above the client connections, as nginx's `keepalive`.
  local site="http://127.0.0.1:$port" tls_line=''
  if [[ $tls != off ]]; then
    site="https://127.0.0.1:$port"
    tls_line="tls $tls_cert $tls_key {
		protocols tls1.2 tls1.3
	}"
  fi
  cat >"$tmp/Caddyfile" <<EOF
{
	admin off
	auto_https off
	servers {
		protocols h1 h2
	}
}
$site {
	$tls_line
	log {
		output stdout
		format json
	}
	reverse_proxy $upstream {
		header_up X-Request-ID {http.request.uuid}
		header_up X-Real-IP {http.request.remote.host}
		transport http {
			keepalive_idle_conns_per_host $((connections * 2))
		}
	}
}
EOF
  more_routes caddy "$tmp/Caddyfile"
  GOMAXPROCS=1 XDG_DATA_HOME=$tmp XDG_CONFIG_HOME=$tmp taskset -c "$proxy_core" \
    caddy run --config "$tmp/Caddyfile" --adapter caddyfile \
    >/dev/null 2>"$tmp/caddy.err" &
  proxy_pid=$!
}

start_traefik() {
  local traefik_router_tls='' traefik_tls=''
  if [[ $tls != off ]]; then
    traefik_router_tls=$'\n      tls: {}'
    traefik_tls="tls:
  options:
    default:
      minVersion: VersionTLS12
  certificates:
    - certFile: \"$tls_cert\"
      keyFile: \"$tls_key\"
  stores:
    default:
      defaultCertificate:
        certFile: \"$tls_cert\"
        keyFile: \"$tls_key\""
  fi
  # Traefik adds X-Forwarded-* and X-Real-Ip itself and keeps upstream
  # connections alive; it has no built-in request id (only plugins make
  # one), so it does one header less than the others. GOMAXPROCS=1 as Caddy.
  cat >"$tmp/traefik.yml" <<EOF
entryPoints:
  web:
    address: "127.0.0.1:$port"
providers:
  file:
    filename: "$tmp/traefik-routes.yml"
accessLog:
  format: json
log:
  level: ERROR
global:
  checkNewVersion: false
  sendAnonymousUsage: false
EOF
  cat >"$tmp/traefik-routes.yml" <<EOF
http:
  routers:
    bench:
      rule: "PathPrefix(\`/\`)"
      entryPoints: [web]
      service: upstream$traefik_router_tls
  services:
    upstream:
      loadBalancer:
        servers:
          - url: "http://$upstream"
$traefik_tls
EOF
  more_routes traefik "$tmp/traefik-routes.yml"
  GOMAXPROCS=1 taskset -c "$proxy_core" "$traefik" --configFile="$tmp/traefik.yml" \
    >/dev/null 2>"$tmp/traefik.err" &
  proxy_pid=$!
}

# Runs wrk in the background and waits for it, so a signal to the script
# acts at once (and cleanup stops wrk) rather than after the run.
run_wrk() {
  local url=$1 duration=$2 out=$3 pid rc=0
  if [[ $h2 == on ]]; then
    run_h2load "$@"
    return
  fi
  taskset -c "$load_core" wrk -t1 -c"$connections" -d"${duration}s" --latency "${wrk_extra[@]}" \
    -s "$wrk_script" "$url" >"$out" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait "$pid" || rc=$?
  forget "$pid"
  return "$rc"
}

# h2load in wrk's place (BENCH_H2=on): the same number of requests in
# flight, multiplexed; its per-request log becomes the WRK_JSON line
# load_report.py reads.
run_h2load() {
  local url=$1 duration=$2 out=$3 pid rc=0 clients
  clients=$(((connections + h2_streams - 1) / h2_streams))
  taskset -c "$load_core" h2load -t1 -c"$clients" -m"$h2_streams" -D"$duration" \
    --log-file="$out.log" "$url" >"$out" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait "$pid" || rc=$?
  forget "$pid"
  ((rc == 0)) || return "$rc"
  python3 - "$out" "$duration" >>"$out" <<'PY'
import json, sys
out, duration = sys.argv[1], float(sys.argv[2])
text = open(out).read()
# h2load's log: start (us since the epoch), status, duration (us), tab-separated.
rows = [l.split("\t") for l in open(out + ".log") if l.strip()]
lat = sorted(int(r[2]) for r in rows)
bad = sum(1 for r in rows if not r[1].startswith("2"))
failed = 0
for line in text.splitlines():
    if line.startswith("requests:"):
        # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
        f = line.split(",")
        failed = int(f[4].split()[0]) if len(f) > 4 else 0
def pct(p):
    return lat[min(len(lat) - 1, int(len(lat) * p / 100))] if lat else 0
if "Application protocol: h2" not in text:
    sys.exit("h2load did not negotiate h2")
points = [10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99]
print("WRK_JSON " + json.dumps({
    "requests": len(lat), "duration_us": int(duration * 1e6), "bytes": 0,
    "latency_us": {"mean": sum(lat) / len(lat) if lat else 0, "p50": pct(50), "p90": pct(90),
                   "p99": pct(99), "p999": pct(99.9), "max": lat[-1] if lat else 0},
    "percentiles_us": {f"{p:g}": pct(p) for p in points},
    "errors": {"connect": 0, "read": 0, "write": 0, "status": bad, "timeout": failed},
}))
PY
}

# The open-loop phase: oha at each fixed rate against $1, one worker
# thread on the load core; its JSON reports go to $tmp/$2.oha.<rate>.json.
run_latency() {
  local url=$1 tag=$2 rate pid rc
  for rate in $latency_rates; do
    rc=0
    taskset -c "$load_core" "$oha" -z "${latency_seconds}s" -c "$connections" -q "$rate" \
      --latency-correction --no-tui --output-format json --worker-threads 1 --insecure \
      "$url" >"$tmp/$tag.oha.$rate.json" 2>"$tmp/$tag.oha.$rate.err" &
    pid=$!
    pids+=("$pid")
    wait "$pid" || rc=$?
    forget "$pid"
    ((rc == 0)) || die "oha at $rate req/s against $url failed: $(cat "$tmp/$tag.oha.$rate.err")"
  done
}

# Measures proxy $1; its files in $tmp are named $2.*.
bench_one() {
  local name=$1 tag=$2 url ps
  port=$(free_port)
  url="$scheme://127.0.0.1:$port$path"
  "start_$name"
  pids+=("$proxy_pid")
  if ! wait_ready "$url" "$proxy_pid"; then
    cat "$tmp/$name.err" >&2 2>/dev/null || true
    die "$name did not answer on $url"
  fi
  if [[ $routes != none ]]; then
    # The routes must be the ones measured: the upstream's body through a
    # route, and a 404 where no route matches.
    local got miss_url=$scheme://127.0.0.1:$port/nope/1 miss
    got=$(curl -ks --max-time 5 "${curl_extra[@]}" "$url" || true)
    [[ $got == "hello, world" ]] || die "$name: $url did not reach the upstream (got: ${got:0:200})"
    if [[ $routes == hosts ]]; then
      miss=$(curl -ks -o /dev/null -w '%{http_code}' --max-time 5 -H "Host: nope.bench.test" "$url" || true)
    else
      miss=$(curl -ks -o /dev/null -w '%{http_code}' --max-time 5 "${curl_extra[@]}" "$miss_url" || true)
    fi
    [[ $miss == 404 ]] || die "$name: a request no route matches answered $miss, not 404"
  fi
  log "$name: warm-up ${warmup}s"
  run_wrk "$url" "$warmup" "$tmp/$tag.warmup" || {
    tail -n 20 "$tmp/$tag.warmup" >&2
    die "wrk warm-up against $name failed"
  }
  mapfile -t ps < <(proxy_pids "$proxy_pid")
  wait_quiet
  log "$name: measuring ${seconds}s with $connections connections"
  local wrk_before
  wrk_before=$(children_cpu)
  sample "$tmp/$tag.before" "${ps[@]}"
  run_wrk "$url" "$seconds" "$tmp/$tag.wrk" || {
    cat "$tmp/$tag.wrk" >&2
    die "wrk against $name failed"
  }
  sample "$tmp/$tag.after" "${ps[@]}"
  echo "wrk_cpu_s=$(awk -v a="$wrk_before" -v b="$(children_cpu)" 'BEGIN {printf "%.3f", b - a}')" >>"$tmp/$tag.after"
  grep -q '^WRK_JSON ' "$tmp/$tag.wrk" || {
    cat "$tmp/$tag.wrk" >&2
    die "no report from wrk against $name"
  }
  if [[ -n $latency_rates ]]; then
    wait_quiet
    log "$name: open-loop latency at ${latency_rates// /, } req/s, ${latency_seconds}s each"
    run_latency "$url" "$tag"
  fi
  stop "$proxy_pid"
  forget "$proxy_pid"
}

# === main ===

main() {
  [[ $(uname -s) == Linux ]] || die "needs Linux (taskset, /proc)"
  local name
  for name in $proxies; do
    [[ $name == @(portico|nginx|haproxy|caddy|traefik) ]] || die "unknown proxy in BENCH_PROXIES: $name"
    [[ $policies == off || $name == @(portico|nginx) ]] || die "BENCH_POLICIES=$policies compares portico with nginx only"
  done
  install_tools
  local rate
  for rate in $latency_rates; do
    [[ $rate =~ ^[1-9][0-9]*$ ]] || die "BENCH_LATENCY_RATES must be positive numbers (req/s), not $rate"
  done
  [[ $latency_seconds =~ ^[1-9][0-9]*$ ]] || die "BENCH_LATENCY_SECONDS must be a positive number"

  local target
  target=$(cd "$root" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  bin_dir=${BENCH_BIN_DIR:-$target/release/examples}
  install_oha
  traefik=
  if [[ " $proxies " == *" traefik "* ]]; then
    traefik=$(bash "$here/traefik/build.sh" "$target/bench-tools/bin") || die "building traefik failed"
  fi
  local suffix=''
  [[ $tls == off ]] || suffix="-tls-$tls"
  [[ $conn == keepalive ]] || suffix+="-conn-$conn"
  [[ $body == none ]] || suffix+="-body-$body"
  [[ $routes == none ]] || suffix+="-routes-$routes"
  [[ $h2 == off ]] || suffix+="-h2"
  case $policies in off) ;; on) suffix+="-policies" ;; *) suffix+="-$policies" ;; esac
  local out=${BENCH_OUT:-$target/bench/load$suffix.json}

  # Portico is the release binary, except with BENCH_PORTICO=example or
  # a policy mode, which only the example can set up.
  portico_as=binary
  portico_bin=${BENCH_PORTICO:-$target/release/portico}
  if [[ $portico_bin == example ]]; then
    [[ $routes == none ]] || die "BENCH_ROUTES=$routes needs the binary: the example serves one route"
    portico_as=example
  elif [[ $policies != off ]]; then
    [[ $routes == none ]] || die "BENCH_POLICIES=$policies and BENCH_ROUTES=$routes do not combine"
    portico_as=example
    log "BENCH_POLICIES=$policies: portico is the bench_proxy example (it sets the policies up)"
  fi
  local examples=(--example bench_upstream)
  [[ " $proxies " == *" portico "* && $portico_as == example ]] && examples+=(--example bench_proxy)
  if [[ ${BENCH_BUILD:-1} != 0 ]]; then
    log "building ${examples[*]} (release)"
    (cd "$root" && cargo build --release -q -p portico-dataplane "${examples[@]}")
    if [[ " $proxies " == *" portico "* && $portico_as == binary ]]; then
      (cd "$root" && cargo build --release -q -p portico)
    fi
  fi

  local cores
  cores=$(nproc)
  ((cores >= 2)) || die "needs two cores (proxy on core $proxy_core, load on core $load_core); this machine has $cores"
  ((cores == 2)) || log "note: $cores cores; only cores $proxy_core and $load_core are used, others may add noise"

  tmp=$(mktemp -d "${TMPDIR:-/tmp}/portico-bench.XXXXXX")
  chmod 755 "$tmp" # nginx's worker drops root
  trap cleanup EXIT
  trap 'exit 130' INT TERM

  wrk_script=$here/wrk_report.lua
  if [[ $policies == limit-keys ]]; then
    # The report, plus a request function that sends a new x-client value
    # each time, cycling through 100,000.
    wrk_script=$tmp/wrk_keys.lua
    cat "$here/wrk_report.lua" - >"$wrk_script" <<'LUA'
local n = 0
request = function()
  n = (n + 1) % 100000
  return wrk.format(nil, nil, { ["x-client"] = tostring(n) })
end
LUA
  fi
  if [[ $routes == hosts ]]; then
    # The report, plus a Host header cycling through the 10,000 hosts
    # (Lua per request: its cost lands on wrk's core, the same for all).
    wrk_script=$tmp/wrk_hosts.lua
    cat "$here/wrk_report.lua" - >"$wrk_script" <<'LUA'
local n = 0
request = function()
  n = (n + 1) % 10000
  return wrk.format(nil, nil, { Host = "h" .. n .. ".bench.test" })
end
LUA
  fi
  if [[ $body == up ]]; then
    # A static request (method, body) keeps wrk's fast path: no Lua per
    # request.
    wrk_script=$tmp/wrk_upload.lua
    cat - "$here/wrk_report.lua" >"$wrk_script" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("x", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
  fi

  if [[ $tls != off ]]; then
    tls_cert=$tmp/tls.crt
    tls_key=$tmp/tls.key
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "$tls_key" -out "$tls_cert" -days 2 -subj /CN=bench.test \
      -addext subjectAltName=DNS:bench.test,IP:127.0.0.1 2>/dev/null || die "openssl cannot make the ECDSA P-256 certificate"
    chmod 644 "$tls_key"
    log "TLS mode $tls: the same ECDSA P-256 certificate for every proxy"
  fi

  # user bench, password bench, as {SHA}: base64 of the password's SHA-1.
  printf 'bench:{SHA}%s\n' "$(printf bench | openssl dgst -sha1 -binary | base64)" >"$tmp/htpasswd"
  chmod 644 "$tmp/htpasswd"

  taskset -c "$load_core" "$bin_dir/bench_upstream" 127.0.0.1:0 >"$tmp/upstream.out" 2>"$tmp/upstream.err" &
  upstream_pid=$!
  pids+=("$upstream_pid")
  upstream=
  local i
  for ((i = 0; i < 100; i++)); do
    upstream=$(head -n1 "$tmp/upstream.out" 2>/dev/null || true)
    [[ -n $upstream ]] && break
    kill -0 "$upstream_pid" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n $upstream ]] || die "upstream did not start: $(cat "$tmp/upstream.err")"
  wait_ready "http://$upstream/" "$upstream_pid" || die "upstream does not answer on $upstream"
  log "upstream on $upstream (core $load_core)"

  redis_url=
  if [[ $policies == global-limit ]]; then
    # On the load core, beside the upstream: the proxy core measures
    # portico's side of the round trip; the latency includes Redis'.
    local redis_port
    redis_port=$(free_port)
    taskset -c "$load_core" redis-server --bind 127.0.0.1 --port "$redis_port" \
      --save '' --appendonly no --dir "$tmp" >"$tmp/redis.out" 2>&1 &
    pids+=($!)
    for ((i = 0; i < 100; i++)); do
      [[ $(redis-cli -p "$redis_port" ping 2>/dev/null) == PONG ]] && break
      sleep 0.1
    done
    [[ $(redis-cli -p "$redis_port" ping 2>/dev/null) == PONG ]] ||
      die "redis-server did not start: $(cat "$tmp/redis.out")"
    redis_url=redis://127.0.0.1:$redis_port
    log "redis-server on 127.0.0.1:$redis_port (core $load_core)"
  fi

  [[ $rounds =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive number"
  local order=($proxies) round
  mkdir -p "$(dirname "$out")"
  for ((round = 1; round <= rounds; round++)); do
    log "round $round of $rounds: ${order[*]}"
    if [[ -n $latency_rates ]]; then
      log "direct (upstream alone): open-loop latency floor"
      wait_quiet
      run_latency "http://$upstream/" "direct.r$round"
    fi
    for name in "${order[@]}"; do
      bench_one "$name" "$name.r$round"
      # wrk's own text, for a second look.
      cp "$tmp/$name.r$round.wrk" "$(dirname "$out")/load$suffix-$name.r$round.wrk.txt"
    done
    # Rotate, so no proxy always runs first (or last) in a round.
    order=("${order[@]:1}" "${order[0]}")
  done

  {
    echo "nproc=$cores"
    echo "cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "kernel=$(uname -r)"
    echo "nginx=$(nginx -v 2>&1 | head -n1)"
    echo "haproxy=$(haproxy -v 2>&1 | head -n1)"
    if command -v caddy >/dev/null; then echo "caddy=caddy $(caddy version 2>&1 | head -n1)"; fi
    if [[ -n $traefik ]]; then echo "traefik=traefik $("$traefik" version 2>&1 | awk '/^Version:/ {print $2}')"; fi
    echo "wrk=$(wrk -v 2>&1 | head -n1 || true)"
    if [[ -n $latency_rates ]]; then echo "oha=$("$oha" --version)"; fi
    echo "latency_rates=$latency_rates"
    echo "latency_seconds=$latency_seconds"
    echo "rustc=$(rustc -V 2>/dev/null || echo unknown)"
    echo "clk_tck=$(getconf CLK_TCK)"
    echo "seconds=$seconds"
    echo "connections=$connections"
    echo "proxy_core=$proxy_core"
    echo "load_core=$load_core"
    echo "proxies=$proxies"
    echo "portico_as=$portico_as"
    echo "rounds=$rounds"
    echo "tls=$tls"
    echo "conn=$conn"
    echo "body=$body"
    echo "routes=$routes"
    echo "h2=$h2"
    if [[ $h2 == on ]]; then echo "h2load=$(h2load --version 2>&1 | head -n1)"; fi
  } >"$tmp/machine"

  python3 "$here/load_report.py" "$tmp" "$out"
}

main "$@"
