#!/usr/bin/env python3
"""Two scenarios of `make bench-report` where the question is "does any
request fail", not "how fast":

  edits     route edits under load: while wrk runs, each proxy's routes
            are rewritten once a second and applied the way its users
            apply them (Portico: the release binary in --manifests mode, a
            manifest file replaced; nginx: nginx -s reload; haproxy: a new
            process taking the listeners over with -x and -sf; Caddy:
            caddy reload; Traefik: its file provider). Each edit adds a
            route /edit-N; the load goes to /bench, which every edit keeps.
            Reports failed requests (must be 0) and whether the last edit
            was live.
  failover  three upstream processes (127.0.0.1-3, one port) behind each
            proxy, one killed with SIGKILL partway through; a client that
            timestamps every request reports the errors and the time from
            the kill to the last error.

Placement as bench/load.sh: the proxy alone on core 0; load and upstreams
on core 1. Every proxy logs each request to /dev/null.

usage: churn.py edits|failover OUT_JSON
env:   BENCH_BIN_DIR (bench_upstream), BENCH_PORTICO (the release binary),
       BENCH_TRAEFIK (the traefik binary; skipped if missing),
       BENCH_PROXIES ("portico nginx haproxy caddy traefik"),
       BENCH_EDIT_SECONDS (20), BENCH_CONNECTIONS (64; failover: 16)
"""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PROXY_CORE, LOAD_CORE = "0", "1"


def log(msg):
    print(f"churn: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_of(url, timeout=1.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def wait_until(check, seconds, proc=None):
    """Polls (bounded) until check() holds; True if it did."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if check():
            return True
        time.sleep(0.1)
    return False


def wait_status(url, want, seconds, proc=None):
    return wait_until(lambda: status_of(url) == want, seconds, proc)


class Processes:
    """Every process this script starts, stopped on the way out."""

    def __init__(self):
        self.procs = []

    def start(self, argv, core, stdout=subprocess.DEVNULL, stderr=None, env=None):
        p = subprocess.Popen(
            ["taskset", "-c", core] + argv,
            stdout=stdout,
            stderr=stderr or subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)
        self.procs = []


# === foreign CPU ===


def process_table():
    """(pid, start time) -> (ppid, jiffies) for every process now."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone between the listing and the read
        table[(int(entry), fields[19])] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


class ForeignCpu:
    """CPU that processes other than this script and its descendants used
    between start() and share(), in cores (1.0 = one core busy), as
    bench/load.sh's foreign column: a busy machine makes a run no result.
    Processes that exited meanwhile are not seen."""

    def start(self):
        self.before, self.t0 = process_table(), time.monotonic()

    def share(self):
        after, wall = process_table(), time.monotonic() - self.t0
        parent = {pid: ppid for (pid, _), (ppid, _) in {**self.before, **after}.items()}
        me = os.getpid()

        def ours(pid):
            for _ in range(64):
                if pid == me:
                    return True
                if pid not in parent or pid <= 1:
                    return False
                pid = parent[pid]
            return False

        used = 0
        for key, (_, ticks) in after.items():
            if not ours(key[0]):
                used += ticks - self.before.get(key, (0, 0))[1]
        return round(used / os.sysconf("SC_CLK_TCK") / wall, 3) if wall > 0 else 0.0


# === configurations ===
# Each proxy's configuration for: listen port, upstream addresses, the
# edit routes (/edit-1 .. /edit-N), and whether upstreams may die (the
# failover scenario: each proxy's own means of routing around a dead
# endpoint, as its documentation recommends).


def nginx_conf(d, port, ups, edits, failover, websocket=False):
    with open(os.path.join(HERE, "nginx.conf.in")) as f:
        conf = f.read()
    http_extra, location_extra = "", ""
    if websocket:
        # What ingress-nginx renders: Upgrade passed on, and Connection
        # "upgrade" for upgrades only, so other requests keep the
        # upstream connection alive.
        http_extra = 'map $http_upgrade $connection_upgrade { default upgrade; "" ""; }'
        location_extra = "proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection $connection_upgrade;"
    conf = (
        conf.replace("@DIR@", d)
        .replace("@PORT@", str(port))
        .replace("@LISTEN_SSL@", "")
        .replace("@SSL_CONF@", "")
        .replace("@HTTP_POLICIES@", http_extra)
    )
    if websocket:
        conf = conf.replace('            proxy_set_header Connection "";\n', "")
    conf = conf.replace("@POLICIES@", location_extra)
    # nginx's defaults already retry the next server on a connect error
    # (proxy_next_upstream error timeout) and set a dead one aside for
    # fail_timeout (10 s) after max_fails (1).
    conf = conf.replace("        server @UPSTREAM@;", "\n".join(f"        server {u};" for u in ups))
    extra = "".join(
        f"        location /edit-{n} {{ proxy_pass http://bench; proxy_http_version 1.1; "
        'proxy_set_header Connection ""; }\n'
        for n in range(1, edits + 1)
    )
    conf = conf.replace("        location / {", extra + "        location /bench {")
    return conf


def haproxy_conf(d, port, ups, edits, failover):
    with open(os.path.join(HERE, "haproxy.cfg.in")) as f:
        conf = f.read()
    conf = (
        conf.replace("@PORT@", str(port))
        .replace("@CORE@", PROXY_CORE)
        .replace("@BIND_SSL@", "")
        .replace("@PROTO@", "http")
        # The listeners are handed to the next process on reload (-x), so
        # no connection is refused in between: haproxy's seamless reload.
        .replace("@GLOBAL_SSL@", f"stats socket {d}/haproxy.sock mode 600 level admin expose-fd listeners")
    )
    # Lines of one ACL name are alternatives (a line takes at most 64 words).
    acls = "".join(f"    acl route path_beg {p}\n" for p in ["/bench"] + [f"/edit-{n}" for n in range(1, edits + 1)])
    conf = conf.replace(
        "    default_backend upstream",
        f"{acls}    http-request deny deny_status 404 unless route\n    default_backend upstream",
    )
    if failover:
        # Active checks each second, and a failed connection retried on
        # another server.
        servers = "    retries 3\n    option redispatch 1\n    retry-on conn-failure empty-response\n"
        servers += "".join(f"    server up{i} {u} check inter 1s fall 1 rise 2\n" for i, u in enumerate(ups))
    else:
        servers = "".join(f"    server up{i} {u}\n" for i, u in enumerate(ups))
    return conf.replace("    server upstream @UPSTREAM@\n", servers)


def caddyfile(d, port, ups, edits, failover, admin):
    lb = ""
    if failover:
        lb = "\n\t\tlb_try_duration 2s\n\t\tfail_duration 10s\n\t\thealth_uri /\n\t\thealth_interval 1s"
    proxy = (
        f"reverse_proxy {' '.join(ups)} {{\n\t\theader_up X-Request-ID {{http.request.uuid}}\n"
        f"\t\theader_up X-Real-IP {{http.request.remote.host}}{lb}\n\t}}"
    )
    routes = f"\thandle /bench* {{\n\t{proxy}\n\t}}\n"
    routes += "".join(f"\thandle /edit-{n}* {{\n\t{proxy}\n\t}}\n" for n in range(1, edits + 1))
    return (
        f"{{\n\tadmin 127.0.0.1:{admin}\n\tauto_https off\n\tservers {{\n\t\tprotocols h1 h2\n\t}}\n}}\n"
        f"http://127.0.0.1:{port} {{\n\tlog {{\n\t\toutput stdout\n\t\tformat json\n\t}}\n"
        f"{routes}\thandle {{\n\t\trespond 404\n\t}}\n}}\n"
    )


def traefik_routes(ups, edits, failover):
    servers = "".join(f'          - url: "http://{u}"\n' for u in ups)
    mw = ""
    svc_extra = ""
    if failover:
        # Traefik retries only through the retry middleware; health
        # checks take a dead server out.
        mw = "      middlewares: [retry]\n"
        svc_extra = "        healthCheck:\n          path: /\n          interval: 1s\n          timeout: 1s\n"
    routers = f'    bench:\n      rule: "PathPrefix(`/bench`)"\n      entryPoints: [web]\n      service: upstream\n{mw}'
    routers += "".join(
        f'    edit{n}:\n      rule: "PathPrefix(`/edit-{n}`)"\n      entryPoints: [web]\n      service: upstream\n'
        for n in range(1, edits + 1)
    )
    out = f"http:\n  routers:\n{routers}  services:\n    upstream:\n      loadBalancer:\n{svc_extra}        servers:\n{servers}"
    if failover:
        out += "  middlewares:\n    retry:\n      retry:\n        attempts: 3\n"
    return out


def portico_manifests(port_of_ups, hosts, edits):
    """One Service, one EndpointSlice (the upstream addresses, one port),
    one Ingress with /bench and the edit paths."""
    paths = "".join(
        f"""          - path: {p}
            pathType: Prefix
            backend:
              service:
                name: bench
                port:
                  number: 80
"""
        for p in ["/bench"] + [f"/edit-{n}" for n in range(1, edits + 1)]
    )
    # One endpoint per address: the addresses of one endpoint are one pod.
    endpoints = "".join(f'  - addresses: ["{h}"]\n    conditions:\n      ready: true\n' for h in hosts)
    return f"""apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: portico
  annotations:
    ingressclass.kubernetes.io/is-default-class: "true"
spec:
  controller: portico.dev/ingress-controller
---
apiVersion: v1
kind: Service
metadata:
  name: bench
  namespace: default
spec:
  ports:
    - name: http
      port: 80
      targetPort: {port_of_ups}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: bench
  namespace: default
  labels:
    kubernetes.io/service-name: bench
addressType: IPv4
ports:
  - name: http
    port: {port_of_ups}
endpoints:
{endpoints}---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: bench
  namespace: default
spec:
  ingressClassName: portico
  rules:
    - http:
        paths:
{paths}"""


def write_atomic(path, text):
    tmp = path + ".tmp~"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# === proxies ===


class Proxy:
    """One proxy under test: start() serves /bench on self.port through
    self.ups; apply(edits) rewrites its routes and applies them."""

    def __init__(self, name, procs, work, ups, failover, websocket=False):
        self.name, self.procs, self.ups, self.failover = name, procs, ups, failover
        self.websocket = websocket
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)  # nginx's worker drops root
        self.port = free_port()
        self.err = open(os.path.join(self.dir, "stderr"), "w")
        self.proc = None

    def run(self, argv, env=None):
        return self.procs.start(argv, PROXY_CORE, stderr=self.err, env=env)

    # --- portico ---
    def start_portico(self):
        self.manifests = os.path.join(self.dir, "manifests")
        os.makedirs(self.manifests, exist_ok=True)
        host, port = self.ups[0].rsplit(":", 1)
        self.ups_port = port
        self.ups_hosts = [u.rsplit(":", 1)[0] for u in self.ups]
        self.apply(0)
        self.proc = self.run(
            [
                os.environ.get("BENCH_PORTICO", "portico"),
                "run",
                "--manifests",
                self.manifests,
                f"--http-addr=127.0.0.1:{self.port}",
                f"--https-addr=127.0.0.1:{free_port()}",
                f"--admin-addr=127.0.0.1:{free_port()}",
                "--debug-addr=off",
            ]
        )

    def apply_portico(self, n):
        write_atomic(
            os.path.join(self.manifests, "bench.yaml"), portico_manifests(self.ups_port, self.ups_hosts, n)
        )

    # --- nginx ---
    def start_nginx(self):
        self.apply_file_nginx(0)
        self.conf_args = ["-e", f"{self.dir}/nginx-error.log", "-p", self.dir, "-c", f"{self.dir}/nginx.conf"]
        self.proc = self.run(["nginx"] + self.conf_args)

    def apply_file_nginx(self, n):
        write_atomic(
            f"{self.dir}/nginx.conf", nginx_conf(self.dir, self.port, self.ups, n, self.failover, self.websocket)
        )

    def apply_nginx(self, n):
        self.apply_file_nginx(n)
        subprocess.run(["nginx"] + self.conf_args + ["-s", "reload"], check=True, capture_output=True)

    # --- haproxy ---
    def start_haproxy(self):
        self.cfg = f"{self.dir}/haproxy.cfg"
        write_atomic(self.cfg, haproxy_conf(self.dir, self.port, self.ups, 0, self.failover))
        self.proc = self.run(["haproxy", "-db", "-f", self.cfg])

    def apply_haproxy(self, n):
        write_atomic(self.cfg, haproxy_conf(self.dir, self.port, self.ups, n, self.failover))
        old = self.proc
        self.proc = self.run(["haproxy", "-db", "-f", self.cfg, "-x", f"{self.dir}/haproxy.sock", "-sf", str(old.pid)])

    # --- caddy ---
    def start_caddy(self):
        self.admin = free_port()
        self.caddyfile = f"{self.dir}/Caddyfile"
        write_atomic(self.caddyfile, caddyfile(self.dir, self.port, self.ups, 0, self.failover, self.admin))
        env = {"GOMAXPROCS": "1", "XDG_DATA_HOME": self.dir, "XDG_CONFIG_HOME": self.dir}
        self.proc = self.run(["caddy", "run", "--config", self.caddyfile, "--adapter", "caddyfile"], env=env)

    def apply_caddy(self, n):
        write_atomic(self.caddyfile, caddyfile(self.dir, self.port, self.ups, n, self.failover, self.admin))
        subprocess.run(
            ["caddy", "reload", "--config", self.caddyfile, "--adapter", "caddyfile", "--address", f"127.0.0.1:{self.admin}"],
            check=True,
            capture_output=True,
            env={**os.environ, "XDG_DATA_HOME": self.dir, "XDG_CONFIG_HOME": self.dir},
        )

    # --- traefik ---
    def start_traefik(self):
        routes = f"{self.dir}/routes"
        os.makedirs(routes, exist_ok=True)
        with open(f"{self.dir}/traefik.yml", "w") as f:
            f.write(
                f'entryPoints:\n  web:\n    address: "127.0.0.1:{self.port}"\n'
                f'providers:\n  file:\n    directory: "{routes}"\n    watch: true\n'
                "accessLog:\n  format: json\nlog:\n  level: ERROR\n"
                "global:\n  checkNewVersion: false\n  sendAnonymousUsage: false\n"
            )
        self.routes = f"{routes}/routes.yml"
        self.apply_traefik(0)
        self.proc = self.run(
            [os.environ["BENCH_TRAEFIK"], f"--configFile={self.dir}/traefik.yml"], env={"GOMAXPROCS": "1"}
        )

    def apply_traefik(self, n):
        write_atomic(self.routes, traefik_routes(self.ups, n, self.failover))

    # --- common ---
    def start(self, ready_path="/bench", ready_status=200):
        """ready_status None: any answer from the upstream (a WebSocket
        server refuses a plain GET), not the proxy's own 404 or 502."""
        getattr(self, f"start_{self.name}")()
        url = f"http://127.0.0.1:{self.port}{ready_path}"
        if ready_status is None:
            ok = wait_until(lambda: status_of(url) not in (None, 404, 502, 503, 504), 20, self.proc)
        else:
            ok = wait_status(url, ready_status, 20, self.proc)
        if not ok:
            self.err.flush()
            with open(os.path.join(self.dir, "stderr")) as f:
                tail = f.read()[-2000:]
            raise RuntimeError(f"{self.name} did not answer on {ready_path} as expected: {tail}")

    def apply(self, n):
        getattr(self, f"apply_{self.name}")(n)


# === scenario: edits ===


def run_wrk(url, seconds, connections):
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
         "-s", os.path.join(HERE, "wrk_report.lua"), url],
        capture_output=True,
        text=True,
    )
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            return json.loads(line[len("WRK_JSON "):])
    raise RuntimeError(f"no report from wrk: {out.stdout[-1000:]} {out.stderr[-1000:]}")


def edits(proxy, seconds, connections):
    proxy.start()
    foreign = ForeignCpu()
    foreign.start()
    # wrk in a thread while this one edits, one edit a second.
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(run_wrk, f"http://127.0.0.1:{proxy.port}/bench", seconds, connections)
        n, failed_applies = 0, 0
        start = time.monotonic()
        while time.monotonic() - start < seconds - 1.5:
            time.sleep(1)
            n += 1
            try:
                proxy.apply(n)
            except subprocess.CalledProcessError as e:
                failed_applies += 1
                log(f"{proxy.name}: applying edit {n} failed: {e.stderr[-300:]!r}")
        wrk = fut.result()
    live = wait_status(f"http://127.0.0.1:{proxy.port}/edit-{n}", 200, 5) if n else None
    errors = wrk["errors"]
    failed = sum(errors.values())
    return {
        "proxy": proxy.name,
        "requests": wrk["requests"],
        "failed": failed,
        "socket_errors": errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        "non_2xx": errors["status"],
        "edits": n,
        "edits_not_applied": failed_applies,
        "last_edit_live": "yes" if live else "no",
        "rps": round(wrk["requests"] / (wrk["duration_us"] / 1e6), 1),
        "p99_ms": round(wrk["latency_us"]["p99"] / 1000, 3),
        "p999_ms": round(wrk["latency_us"]["p999"] / 1000, 3),
        "max_ms": round(wrk["latency_us"]["max"] / 1000, 3),
        "percentiles_ms": {k: v / 1000 for k, v in (wrk.get("percentiles_us") or {}).items()},
        "foreign_cpu": foreign.share(),
    }


# === scenario: failover ===


async def client(port, seconds, connections, kill_at, on_kill):
    """Keep-alive HTTP/1.1 GETs on `connections` connections; returns a list
    of (seconds since start, ok) per request, reconnecting after an error."""
    req = f"GET /bench HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    t0 = time.monotonic()
    end = t0 + seconds
    events = []

    async def one():
        reader = writer = None
        while time.monotonic() < end:
            ok = False
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(req)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                status = int(head.split(b" ", 2)[1])
                length = 0
                close = False
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    k = k.strip().lower()
                    if k == b"content-length":
                        length = int(v)
                    elif k == b"connection" and v.strip().lower() == b"close":
                        close = True
                if length:
                    await asyncio.wait_for(reader.readexactly(length), 5)
                ok = 200 <= status < 300
                if close:
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, IndexError):
                if writer is not None:
                    writer.close()
                writer = None
            events.append((time.monotonic() - t0, ok))
            if not ok:
                await asyncio.sleep(0.001)
        if writer is not None:
            writer.close()

    async def killer():
        await asyncio.sleep(kill_at)
        on_kill()

    await asyncio.gather(killer(), *[one() for _ in range(connections)])
    return events


def failover(proxy, seconds, connections, ups_procs):
    proxy.start()
    kill_at = seconds / 4
    victim = ups_procs[1]
    served = {}

    def kill():
        # The victim's CPU time so far: proof it was taking its share of
        # the load (a proxy that never sent it anything has nothing to fail
        # over from).
        with open(f"/proc/{victim.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        served["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        victim.send_signal(signal.SIGKILL)

    foreign = ForeignCpu()
    foreign.start()
    events = asyncio.run(client(proxy.port, seconds, connections, kill_at, kill))
    errors = [t for t, ok in events if not ok]
    after = [t for t, ok in events if t >= kill_at]
    last = max(errors) - kill_at if errors else None
    return {
        "proxy": proxy.name,
        "requests": len(events),
        "errors": len(errors),
        "error_rate": f"{len(errors) / len(events):.3%}" if events else None,
        "errors_before_kill": sum(1 for t in errors if t < kill_at),
        "last_error_after_kill_s": round(last, 3) if last is not None else "none",
        "rps_after_kill": round(len(after) / (seconds - kill_at), 1) if after else None,
        "killed_upstream_cpu_s": served.get("cpu_s"),
        "foreign_cpu": foreign.share(),
    }


# === main ===


def available(names):
    """The proxies of `names` that are installed, and a note for each that is not."""
    names, notes = list(names), []
    if "traefik" in names and not os.access(os.environ.get("BENCH_TRAEFIK", ""), os.X_OK):
        names.remove("traefik")
        notes.append("Traefik not measured: no traefik binary (BENCH_TRAEFIK).")
    for tool in ("nginx", "haproxy", "caddy"):
        if tool in names and not shutil.which(tool):
            names.remove(tool)
            notes.append(f"{tool} not measured: not installed.")
    return names, notes


def workdir():
    work = tempfile.mkdtemp(prefix="portico-churn.")
    os.chmod(work, 0o755)  # nginx's worker drops root
    return work


def remove(work):
    shutil.rmtree(work, ignore_errors=True)


def start_upstreams(procs, hosts, port, work):
    bin_dir = os.environ.get("BENCH_BIN_DIR", "target/release/examples")
    ups, ps = [], []
    for h in hosts:
        out = open(os.path.join(work, f"upstream-{h}.out"), "w+")
        p = procs.start([os.path.join(bin_dir, "bench_upstream"), f"{h}:{port}"], LOAD_CORE, stdout=out)
        ups.append(f"{h}:{port}")
        ps.append(p)
    for u, p in zip(ups, ps):
        if not wait_status(f"http://{u}/", 200, 10, p):
            raise RuntimeError(f"upstream {u} did not start")
    return ups, ps


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("edits", "failover"):
        raise SystemExit("usage: churn.py edits|failover OUT_JSON")
    what, out = sys.argv[1], sys.argv[2]
    names = os.environ.get("BENCH_PROXIES", "portico nginx haproxy caddy traefik").split()
    seconds = int(os.environ.get("BENCH_EDIT_SECONDS", "20"))
    names, notes = available(names)
    work = workdir()
    procs = Processes()
    results = []
    try:
        for name in names:
            hosts = ["127.0.0.1"] if what == "edits" else ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
            ups, ups_procs = start_upstreams(procs, hosts, free_port(), work)
            proxy = Proxy(name, procs, work, ups, what == "failover")
            log(f"{what}: {name}, {seconds} s")
            try:
                if what == "edits":
                    r = edits(proxy, seconds, int(os.environ.get("BENCH_CONNECTIONS", "64")))
                else:
                    r = failover(proxy, seconds, int(os.environ.get("BENCH_FAILOVER_CONNECTIONS", "16")), ups_procs)
                results.append(r)
                log(f"{name}: {r}")
            except (RuntimeError, subprocess.CalledProcessError) as e:
                notes.append(f"{name} not measured: {e}")
                log(f"{name}: {e}")
            procs.stop_all()
    finally:
        procs.stop_all()
        remove(work)
    if what == "edits":
        doc = {
            "caption": f"wrk on /bench for {seconds} s while the routes change once a second",
            "columns": [
                ["proxy", "proxy"],
                ["failed", "failed requests", "d"],
                ["socket_errors", "socket errors", "d"],
                ["non_2xx", "non-2xx", "d"],
                ["edits", "edits", "d"],
                ["edits_not_applied", "edits refused", "d"],
                ["last_edit_live", "last edit live"],
                ["requests", "requests", "d"],
                ["rps", "req/s"],
                ["p99_ms", "p99 ms", ".3f"],
                ["p999_ms", "p99.9 ms", ".3f"],
                ["max_ms", "max ms", ".3f"],
                ["foreign_cpu", "foreign CPU", ".0%"],
            ],
            "curves": {r["proxy"]: r.pop("percentiles_ms") for r in results},
            "curve_title": "wrk (closed loop) during the edits",
        }
        bad = [r["proxy"] for r in results if r["failed"]]
        if bad:
            notes.append(f"Failed requests during edits (target 0): {', '.join(bad)}.")
    else:
        doc = {
            "caption": f"{seconds} s of load, 16 keep-alive connections (Python asyncio client on the load core); "
            f"one of three upstreams killed at {seconds / 4:.0f} s",
            "columns": [
                ["proxy", "proxy"],
                ["errors", "errors", "d"],
                ["error_rate", "error rate"],
                ["last_error_after_kill_s", "last error after the kill, s", ".3f"],
                ["errors_before_kill", "errors before the kill", "d"],
                ["requests", "requests", "d"],
                ["rps_after_kill", "req/s after the kill"],
                ["killed_upstream_cpu_s", "CPU s the killed upstream had used", ".2f"],
                ["foreign_cpu", "foreign CPU", ".0%"],
            ],
            "bar": {"key": "errors", "title": "errors after one of three upstreams was killed", "ylabel": "errors"},
        }
    doc["results"] = results
    doc["notes"] = notes
    with open(out, "w") as f:
        json.dump(doc, f, indent=2)
    if not results:
        raise SystemExit(f"churn: no proxy measured: {notes}")


if __name__ == "__main__":
    main()
