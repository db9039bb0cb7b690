#!/usr/bin/env python3
"""Memory and apply-to-live time at scale, from the release binary in
standalone mode (issue "Performance at scale").

Writes N Ingresses (one file each, PATHS paths each) over 100 Services whose
EndpointSlices point at one local upstream, starts `portico run --manifests`,
and reports:

  - resident memory (VmRSS) once every host is served (idle);
  - apply-to-live: EDITS edits, one every INTERVAL seconds, each rewriting one
    Ingress file so a new path answers; the time from the file's rename into
    place to the first 200 on the new path (polled every millisecond), p50,
    p99 and max;
  - resident memory during the churn (sampled after each edit) and at its end,
    and with 60 s or more of edits, the end against the first minute's (the
    goal: within 10%).

With `--kind httproute` the objects are Gateway API HTTPRoutes instead (one
Gateway, one rule per path, `--ingresses` of them), translated in full on
every rebuild where Ingresses are memoized.

Usage: python3 bench/scale.py [--ingresses 2000] [--paths 5] [--edits 60]
       [--interval 1.0] [--timeout 10] [--bin target/release/portico]
       [--kind ingress|httproute]

Only 127.0.0.1 is used. Run on a quiet machine: apply-to-live is a time.
"""

import argparse
import http.client
import http.server
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"ok"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_split(pid):
    """Anonymous (heap, stacks) and file-backed (the binary's text) RSS:
    the allocator's share is the first."""
    anon, file = rss_kib(pid, "RssAnon"), rss_kib(pid, "RssFile")
    return f"anonymous {anon / 1024:.1f} MiB, file-backed {file / 1024:.1f} MiB"


def ingress_yaml(i, paths, extra=None):
    names = [f"/p{p}" for p in range(paths)]
    if extra:
        names[-1] = extra
    items = "".join(
        f"""      - path: {path}
        pathType: Prefix
        backend:
          service:
            name: svc{(i + k) % 100}
            port:
              number: 80
"""
        for k, path in enumerate(names)
    )
    return f"""apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: ing{i}
  namespace: default
  annotations:
    nginx.ingress.kubernetes.io/proxy-read-timeout: "30"
spec:
  ingressClassName: portico
  rules:
  - host: h{i}.example.com
    http:
      paths:
{items}"""


def httproute_yaml(i, paths, extra=None):
    """The same routes as `ingress_yaml`, as a Gateway API HTTPRoute on the
    Gateway `gw` (one rule per path)."""
    names = [f"/p{p}" for p in range(paths)]
    if extra:
        names[-1] = extra
    rules = "".join(
        f"""  - matches: [{{path: {{type: PathPrefix, value: "{path}"}}}}]
    timeouts: {{backendRequest: 30s}}
    backendRefs: [{{name: svc{(i + k) % 100}, port: 80}}]
"""
        for k, path in enumerate(names)
    )
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: route{i}
  namespace: default
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [h{i}.example.com]
  rules:
{rules}"""


GATEWAY = """apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portico}
spec: {controllerName: portico.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: portico
  listeners: [{name: http, port: 80, protocol: HTTP}]
"""


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def get(port, host, path, timeout=2.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        r.read()
        return r.status
    except OSError:
        return None
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ingresses", type=int, default=2000)
    ap.add_argument("--paths", type=int, default=5)
    ap.add_argument("--edits", type=int, default=60)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds an edit may take")
    ap.add_argument("--bin", default="target/release/portico")
    ap.add_argument("--keep", action="store_true", help="keep the manifest folder")
    ap.add_argument("--log", help="portico's log goes here (default: discarded)")
    ap.add_argument(
        "--kind",
        choices=["ingress", "httproute"],
        default="ingress",
        help="the objects written: Ingresses, or Gateway API HTTPRoutes on one Gateway",
    )
    a = ap.parse_args()
    route_yaml = ingress_yaml if a.kind == "ingress" else httproute_yaml

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    up_port = upstream.server_address[1]

    d = tempfile.mkdtemp(prefix="portico-scale-")
    base = [
        """apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: portico
spec:
  controller: portico.dev/ingress-controller
"""
    ]
    for s in range(100):
        base.append(
            f"""apiVersion: v1
kind: Service
metadata: {{name: svc{s}, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: {up_port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc{s}-a
  namespace: default
  labels: {{kubernetes.io/service-name: svc{s}}}
addressType: IPv4
ports: [{{name: http, port: {up_port}}}]
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {{ready: true}}
"""
        )
    if a.kind == "httproute":
        base.append(GATEWAY)
    write(os.path.join(d, "base.yaml"), "---\n".join(base))
    for i in range(a.ingresses):
        write(os.path.join(d, f"ing{i:05}.yaml"), route_yaml(i, a.paths))

    http_port, admin_port = free_port(), free_port()
    start = time.monotonic()
    proc = subprocess.Popen(
        [
            a.bin, "run", "--manifests", d,
            "--http-addr", f"127.0.0.1:{http_port}",
            "--https-addr", f"127.0.0.1:{free_port()}",
            "--admin-addr", f"127.0.0.1:{admin_port}",
            "--debug-addr", f"127.0.0.1:{free_port()}",
            "--access-log", "false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(a.log, "w") if a.log else subprocess.DEVNULL,
    )
    try:
        last = a.ingresses - 1
        while get(http_port, f"h{last}.example.com", "/p0") != 200:
            if proc.poll() is not None:
                sys.exit(f"portico exited: {proc.returncode}")
            time.sleep(0.05)
        first_live = time.monotonic() - start
        time.sleep(2)
        idle = rss_kib(proc.pid)
        rules = a.ingresses * a.paths
        objects = "Ingresses" if a.kind == "ingress" else "HTTPRoutes (Gateway API)"
        print(f"{a.ingresses} {objects} x {a.paths} paths = {rules} rules")
        print(f"start to every host served: {first_live:.2f} s")
        print(
            f"RSS idle after the first publish: {idle / 1024:.1f} MiB "
            f"({rss_split(proc.pid)})"
        )

        # `rss`: just after each edit went live (the rebuild's peak, often
        # before freed memory is returned); `settled`: just before the next
        # edit, about an interval later.
        lat, rss, settled = [], [], []
        churn_start, minute1 = time.monotonic(), None
        # RSS at the end of each minute of churn, to tell growth from a
        # plateau.
        per_minute = []
        for e in range(a.edits):
            i = (e * 7919) % a.ingresses
            path = f"/edit{e}"
            t_next = time.monotonic() + a.interval
            if e:
                settled.append(rss_kib(proc.pid))
            write(os.path.join(d, f"ing{i:05}.yaml"), route_yaml(i, a.paths, path))
            t0 = time.monotonic()
            while get(http_port, f"h{i}.example.com", path) != 200:
                if time.monotonic() - t0 > a.timeout:
                    sys.exit(f"edit {e} not live after {a.timeout:g} s")
                time.sleep(0.001)
            lat.append((time.monotonic() - t0) * 1000)
            rss.append(rss_kib(proc.pid))
            if minute1 is None and time.monotonic() - churn_start >= 60:
                minute1 = rss[-1]
            if time.monotonic() - churn_start >= 60 * (len(per_minute) + 1):
                per_minute.append(rss[-1])
            time.sleep(max(0.0, t_next - time.monotonic()))
        lat.sort()
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(
            f"apply-to-live over {a.edits} edits every {a.interval:g} s: "
            f"p50 {statistics.median(lat):.0f} ms, p99 {p99:.0f} ms, max {lat[-1]:.0f} ms"
        )
        print(
            f"RSS under churn: max {max(rss) / 1024:.1f} MiB, "
            f"end {rss[-1] / 1024:.1f} MiB ({rss_split(proc.pid)})"
        )
        if settled:
            print(
                f"RSS under churn before each edit: median "
                f"{statistics.median(settled) / 1024:.1f} MiB, max {max(settled) / 1024:.1f} MiB"
            )
        if minute1:
            # The flatness goal: the end within 10% of the first minute.
            print(
                f"RSS after the first minute of churn {minute1 / 1024:.1f} MiB, "
                f"end/first minute {rss[-1] / minute1:.3f}"
            )
            print(
                "RSS at the end of each minute (MiB): "
                + " ".join(f"{r / 1024:.1f}" for r in per_minute)
            )
    finally:
        proc.terminate()
        proc.wait()
        upstream.shutdown()
        if not a.keep:
            shutil.rmtree(d)


if __name__ == "__main__":
    main()
