#!/usr/bin/env python3
"""Many routes for bench/load.sh (BENCH_ROUTES): turns one proxy's rendered
single-route configuration into the same proxy with

  hosts  10,000 virtual hosts h0.bench.test .. h9999.bench.test, all to
         the upstream (the load varies the Host header over all of them);
         unknown hosts answer 404, so a miss would show as an error;
  regex  100 regular-expression path routes ^/r<i>/[a-z]+/[0-9]+
         (case-insensitive, as ingress-nginx renders use-regex), requests
         matching the last one; other paths answer 404.

Each proxy is given the form its users (or its ingress controller) would
write: nginx one server with the 10,000 names (its server-name hash) or
regex locations in order; haproxy a map file for hosts and path_reg ACLs;
Caddy one site block listing every host (its host matcher) or
path_regexp handle blocks; Traefik one router per host or regex (as its
Kubernetes provider makes one per Ingress rule); Portico Ingress
manifests served by the release binary in --manifests mode.

For Portico alone there are two more kinds, the route every proxy has
without BENCH_ROUTES:

  one    one Ingress sending every host and path to the upstream, what the
         bench_proxy example serves; with CERT and KEY (PEM files) also a
         TLS Secret, for `--default-ssl-certificate default/bench-tls`;
  grpc   the same Ingress to a gRPC upstream (`backend-protocol: GRPC`,
         h2c) with the gRPC-Web bridge on, what the bench_grpc example's
         proxy serves (bench/grpc.sh, bench/instructions.sh).

usage: routes.py KIND PROXY FILE [UPSTREAM [CERT KEY]]
  nginx, haproxy, caddy, traefik: rewrites FILE (the rendered config) in place;
  portico: writes the manifests to directory FILE (needs UPSTREAM host:port).
"""

import base64
import os
import sys

HOSTS = 10_000
REGEXES = 100


def host(i):
    return f"h{i}.bench.test"


def regex(i):
    return f"^/r{i}/[a-z]+/[0-9]+"


def block(text, start):
    """The `{ ... }` block that begins at the line containing `start`:
    (index of that line's start, index just past its closing brace)."""
    i = text.index(start)
    i = text.rindex("\n", 0, i) + 1
    depth, j = 0, text.index("{", i)
    while True:
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i, j + 1
        j += 1


def nginx(kind, conf):
    if kind == "hosts":
        names = " ".join(host(i) for i in range(HOSTS))
        listen = conf[conf.index("        listen ") :].split("\n", 1)[0]
        default = listen.replace(";", " default_server;")
        conf = conf.replace(
            "    server {\n",
            "    server_names_hash_max_size 32768;\n    server_names_hash_bucket_size 64;\n"
            f"    server {{\n{default}\n        return 404;\n    }}\n"
            f"    server {{\n        server_name {names};\n",
            1,
        )
        return conf
    start, end = block(conf, "        location / {")
    loc = conf[start:end]
    regexes = "\n".join(loc.replace("location / {", f"location ~* {regex(i)} {{") for i in range(REGEXES))
    return conf[:start] + regexes + "\n        location / {\n            return 404;\n        }" + conf[end:]


def haproxy(kind, conf, path):
    if kind == "hosts":
        mapfile = os.path.join(os.path.dirname(path), "hosts.map")
        with open(mapfile, "w") as f:
            f.writelines(f"{host(i)} upstream\n" for i in range(HOSTS))
        rule = f"    http-request deny deny_status 404 unless {{ req.hdr(host),lower,map({mapfile}) -m found }}\n"
    else:
        # Lines of one ACL name are alternatives, tried in order (a config
        # line takes at most 64 words).
        acls = "".join(f"    acl route path_reg -i {regex(i)}\n" for i in range(REGEXES))
        rule = f"{acls}    http-request deny deny_status 404 unless route\n"
    return conf.replace("    default_backend upstream\n", rule + "    default_backend upstream\n")


def caddy(kind, conf):
    # The rendered Caddyfile has one site, "http://127.0.0.1:PORT { ... }",
    # whose reverse_proxy block is reused.
    site_start = conf.index("http://127.0.0.1:")
    port = conf[site_start:].split(" ", 1)[0].rsplit(":", 1)[1]
    proxy = conf[slice(*block(conf, "\treverse_proxy "))]
    if kind == "hosts":
        addrs = ", ".join(f"http://{host(i)}:{port}" for i in range(HOSTS))
    else:
        # The regex requests carry Host: bench.test (Portico's Ingress
        # names that host); a site address is also a host matcher.
        addrs = f"http://bench.test:{port}"
    conf = conf[:site_start] + conf[site_start:].replace(f"http://127.0.0.1:{port} {{\n", f"{addrs} {{\n\tbind 127.0.0.1\n", 1)
    # Other hosts: 404, as the other proxies answer (Caddy's default for a
    # host no site names is an empty 200).
    conf += f"\nhttp://:{port} {{\n\tbind 127.0.0.1\n\trespond 404\n}}\n"
    if kind == "hosts":
        return conf
    start, end = block(conf, "\treverse_proxy ")
    handles = "".join(
        f"\t@r{i} path_regexp (?i){regex(i)}\n\thandle @r{i} {{\n\t{proxy.strip()}\n\t}}\n" for i in range(REGEXES)
    )
    return conf[:start] + handles + "\thandle {\n\t\trespond 404\n\t}\n" + conf[end:]


def traefik(kind, conf):
    # The rendered routes file has one router, "bench", to service "upstream".
    head, rest = conf.split("  services:\n", 1)
    routers = ["http:\n  routers:\n"]
    if kind == "hosts":
        for i in range(HOSTS):
            routers.append(f'    h{i}:\n      rule: "Host(`{host(i)}`)"\n      entryPoints: [web]\n      service: upstream\n')
    else:
        for i in range(REGEXES):
            routers.append(
                f'    r{i}:\n      rule: "PathRegexp(`(?i){regex(i)}`)"\n      entryPoints: [web]\n      service: upstream\n'
            )
    return "".join(routers) + "  services:\n" + rest


def portico(kind, out, upstream, tls=None):
    os.makedirs(out, exist_ok=True)
    addr, port = upstream.rsplit(":", 1)
    docs = [
        f"""apiVersion: networking.k8s.io/v1
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
      targetPort: {port}
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
    port: {port}
endpoints:
  - addresses: ["{addr}"]
    conditions:
      ready: true
"""
    ]
    backend = "            backend:\n              service:\n                name: bench\n                port:\n                  number: 80\n"
    if tls:
        cert, key = (base64.b64encode(open(p, "rb").read()).decode() for p in tls)
        docs.append(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bench-tls\n  namespace: default\n"
            f"type: kubernetes.io/tls\ndata:\n  tls.crt: {cert}\n  tls.key: {key}\n"
        )
    if kind in ("one", "grpc"):
        annotations = ""
        if kind == "grpc":
            annotations = (
                "  annotations:\n    nginx.ingress.kubernetes.io/backend-protocol: GRPC\n"
                '    portico.dev/grpc-web: "true"\n'
            )
        docs.append(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: bench\n  namespace: default\n"
            f"{annotations}"
            "spec:\n  ingressClassName: portico\n  rules:\n    - http:\n        paths:\n"
            f"          - path: /\n            pathType: Prefix\n{backend}"
        )
    elif kind == "hosts":
        # 100 Ingresses of 100 hosts each, as many teams' Ingresses would be.
        per = 100
        for k in range(HOSTS // per):
            rules = "".join(
                f"    - host: {host(i)}\n      http:\n        paths:\n          - path: /\n            pathType: Prefix\n{backend}"
                for i in range(k * per, (k + 1) * per)
            )
            docs.append(
                f"apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: hosts-{k}\n  namespace: default\n"
                f"spec:\n  ingressClassName: portico\n  rules:\n{rules}"
            )
    else:
        paths = "".join(
            f"          - path: {regex(i)[1:]}\n            pathType: ImplementationSpecific\n{backend}"
            for i in range(REGEXES)
        )
        docs.append(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: regex\n  namespace: default\n"
            '  annotations:\n    nginx.ingress.kubernetes.io/use-regex: "true"\n'
            f"spec:\n  ingressClassName: portico\n  rules:\n    - host: bench.test\n      http:\n        paths:\n{paths}"
        )
    with open(os.path.join(out, "bench.yaml"), "w") as f:
        f.write("---\n".join(docs))


def main():
    if len(sys.argv) < 4 or sys.argv[1] not in ("hosts", "regex", "one", "grpc"):
        raise SystemExit(__doc__)
    kind, proxy, path = sys.argv[1:4]
    if proxy == "portico":
        portico(kind, path, sys.argv[4], sys.argv[5:7] if len(sys.argv) >= 7 else None)
        return
    if kind in ("one", "grpc"):
        raise SystemExit(f"routes.py: kind {kind} is for portico")
    with open(path) as f:
        conf = f.read()
    if proxy == "nginx":
        conf = nginx(kind, conf)
    elif proxy == "haproxy":
        conf = haproxy(kind, conf, path)
    elif proxy == "caddy":
        conf = caddy(kind, conf)
    elif proxy == "traefik":
        conf = traefik(kind, conf)
    else:
        raise SystemExit(f"routes.py: unknown proxy {proxy}")
    with open(path, "w") as f:
        f.write(conf)


if __name__ == "__main__":
    main()
