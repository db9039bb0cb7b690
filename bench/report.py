#!/usr/bin/env python3
"""Renders the `make bench-report` results: a self-contained HTML page
(plots embedded as PNG data, no network needed to view it) and a markdown
summary, from the JSON files bench/report.sh leaves in DATA_DIR. Measures
nothing, so it can be rerun on existing results (`make bench-report-render`).

usage: report.py DATA_DIR OUT_DIR

Every one of the twelve scenarios is listed; one without results says why.
"""

import base64
import html
import io
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FixedFormatter  # noqa: E402

PEERS = ("nginx", "haproxy", "caddy", "traefik")
ORDER = ("portico",) + PEERS
COLORS = {
    "portico": "#d62728",
    "nginx": "#2ca02c",
    "haproxy": "#1f77b4",
    "caddy": "#9467bd",
    "traefik": "#ff7f0e",
    "direct": "#7f7f7f",
}
# Beyond this share of a core taken by other processes during a run, its
# figures say more about the machine than about the proxies.
FOREIGN_LIMIT = 0.05


class Scenario:
    """parts: [(suffix, label)] for a scenario measured in several runs,
    each in <id>-<suffix>.json; none: one run in <id>.json."""

    def __init__(self, sid, title, what, notes=(), parts=()):
        self.id, self.title, self.what, self.notes = sid, title, what, list(notes)
        self.parts = list(parts)


SCENARIOS = [
    Scenario(
        "keepalive",
        "Small responses, keep-alive",
        "bench/load.sh as is: wrk, 64 keep-alive connections, 13-byte responses; "
        "then oha open-loop at fixed rates where oha is available.",
        [
            "Traefik adds no request id (it has none built in), so it does one header less than the others.",
            "Caddy and Traefik run with GOMAXPROCS=1, the others with one worker thread.",
            "Portico is the release binary `portico run --manifests` (one Ingress, one tokio worker, "
            "access log on) here and in scenarios 2 to 8; BENCH_PORTICO=example measures the "
            "bench_proxy example instead.",
        ],
    ),
    Scenario(
        "conn-close",
        "A new connection per request",
        "BENCH_CONN=close: wrk sends Connection: close, so every request is a new TCP "
        "connection to the proxy; upstream connections stay alive.",
    ),
    Scenario(
        "tls-keepalive",
        "TLS, keep-alive",
        "BENCH_TLS=keepalive: HTTPS over keep-alive connections, the same ECDSA P-256 "
        "certificate for all, TLS 1.2 and 1.3, HTTP/1.1 (wrk sends no ALPN).",
        ["Caddy's HTTP/3 is off (it would open a UDP port); h1 and h2 stay on."],
    ),
    Scenario(
        "tls-handshake",
        "Full TLS handshakes",
        "BENCH_TLS=handshake: a new TLS connection per request; wrk does not resume "
        "sessions, so every request is a full handshake (each proxy keeps its default "
        "session cache, which wrk never uses).",
        [
            "haproxy and nginx are Debian's builds on the system OpenSSL; Caddy and Traefik use "
            "Go's crypto/tls; Portico uses rustls. Handshake rates depend on the TLS library "
            "build as much as on the proxy."
        ],
    ),
    Scenario(
        "bodies",
        "1 MiB bodies up and down",
        "BENCH_BODY=up: every request a POST of a 1 MiB body; BENCH_BODY=down: every request a GET "
        "of a 1 MiB response (bench_upstream's /1m); keep-alive, wrk as in scenario 1.",
        [
            "nginx runs with client_body_buffer_size 2m so a 1 MiB upload is not written to a "
            "temporary file; its response buffering (proxy_buffering on, the default) is left as is.",
        ],
        parts=[("up", "1 MiB up (POST)"), ("down", "1 MiB down (GET)")],
    ),
    Scenario(
        "routes-10k",
        "10,000 routes, lookups spread over them",
        "BENCH_ROUTES=hosts: 10,000 virtual hosts in each proxy's configuration (bench/routes.py); "
        "a wrk Lua script varies the Host header over all of them; before measuring, each proxy is "
        "checked to reach the upstream through a route and to answer 404 for an unknown host.",
        [
            "Portico is the release binary in --manifests mode (100 Ingresses of 100 hosts), as in "
            "scenario 1 (one Ingress there).",
            "Each peer in the form its users write: nginx one server with 10,000 server_names (its "
            "name hash); haproxy a map file; Caddy one site block listing every host; Traefik one "
            "router per host, as its Kubernetes provider makes one per Ingress rule.",
            "wrk runs Lua per request here (the Host header), on the load core: the same for all.",
        ],
    ),
    Scenario(
        "regex",
        "Regex routes",
        "BENCH_ROUTES=regex: 100 regex path routes ^/r<i>/[a-z]+/[0-9]+ (case-insensitive, as "
        "ingress-nginx renders use-regex); every request matches the last one; checked as in "
        "scenario 6.",
        [
            "Portico is the release binary in --manifests mode with one Ingress carrying "
            "use-regex and 100 ImplementationSpecific paths.",
            "nginx: regex locations in order; haproxy: one ACL of 100 path_reg patterns; Caddy: "
            "path_regexp handle blocks (Caddy orders them itself); Traefik: one PathRegexp router "
            "each (ordered by rule length).",
        ],
    ),
    Scenario(
        "h2",
        "HTTP/2 multiplexed",
        "BENCH_H2=on: h2load (Debian's nghttp2-client) in wrk's place, TLS with ALPN h2, the same "
        "64 requests in flight as 8 connections of 8 streams; HTTP/1.1 keep-alive to the upstream "
        "as in every scenario; percentiles from h2load's per-request log (closed loop).",
        [
            "nginx listens with ssl http2, haproxy with alpn h2,http/1.1; Caddy and Traefik "
            "offer h2 by default on TLS; Portico is the release binary with the certificate as a "
            "Secret and --default-ssl-certificate.",
        ],
    ),
    Scenario(
        "grpc",
        "gRPC unary and streaming",
        "bench/grpc.sh: unary calls and Bidi stream messages from bench_grpc (tonic) straight to the upstream (direct), "
        "through Portico (the release binary with one `backend-protocol: GRPC` Ingress, and gRPC-Web "
        "through its bridge; BENCH_PORTICO=example: the bench_grpc proxy), nginx "
        "(grpc_pass), and haproxy, Caddy and Traefik as HTTP/2 proxies (h2c in and out).",
        [
            "Streaming (-stream rows): 64 long-lived Bidi streams on one connection, a message "
            "and its echo at a time (bench_grpc's grpc-stream mode); a bench_grpc built without "
            "it gives no such rows, and grpc.log says so.",
        ],
    ),
    Scenario(
        "websocket",
        "WebSocket echo",
        "bench/websocket.py: an echo upstream and a client (Python, the websockets package), both "
        "on the load core; 16 WebSockets, one 64-byte message in flight on each; messages/s, round "
        "trip and the proxy's CPU per message.",
        [
            "The Python load side saturates before any proxy, so messages/s says little; the "
            "proxy's CPU per message and the round trip compare the proxies.",
            "Portico is the release binary in --manifests mode; nginx passes Upgrade and "
            "Connection as ingress-nginx renders them; haproxy, Caddy and Traefik need nothing.",
        ],
    ),
    Scenario(
        "route-edits",
        "Route edits under load",
        "While wrk runs, each proxy's configuration is rewritten every second (Portico: the real "
        "binary in --manifests mode, a manifest file edit; nginx: nginx -s reload; haproxy: a new "
        "process with -sf; Caddy: caddy reload; Traefik: its file provider). Failed requests must be 0.",
        [
            "Portico here is the release binary `portico run --manifests`, not the bench_proxy example.",
            "A failed request is a socket error or a non-2xx status seen by wrk. wrk does not retry "
            "a request whose keep-alive connection the proxy closed; many clients retry idempotent "
            "requests then, so they would not see such an error, but a client that cannot retry does.",
            "haproxy reloads seamlessly (the listeners passed to the new process with -x, a stats "
            "socket with expose-fd listeners); nginx and Caddy as their users reload them.",
        ],
    ),
    Scenario(
        "failover",
        "One of three endpoints killed under load",
        "Three bench_upstream processes (127.0.0.1, .2, .3, one port) behind each proxy; one is "
        "killed with SIGKILL a quarter into the run; a client on the load core (16 keep-alive "
        "connections, Python asyncio, every request timestamped) counts the errors and the time "
        "from the kill to the last error.",
        [
            "Portico is the release binary in --manifests mode with an EndpointSlice of three "
            "endpoints that stays unchanged (no Kubernetes to remove the dead pod), on its defaults; "
            "make bench-failover breaks Portico's behaviour down by configuration.",
            "Each peer uses its own means, as its documentation recommends: nginx its defaults "
            "(proxy_next_upstream error timeout, max_fails 1, fail_timeout 10s); haproxy active "
            "checks every second, retry-on conn-failure empty-response, redispatch; Caddy "
            "lb_try_duration 2s, fail_duration 10s, active health checks every second; Traefik a "
            "health check every second and the retry middleware (3 attempts).",
            "The client's rate is far below saturation (Python); the error count scales with it.",
        ],
    ),
]


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def key_values(path):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                k, sep, v = line.rstrip("\n").partition("=")
                if sep:
                    out[k] = v
    except FileNotFoundError:
        pass
    return out


def fmt(v, spec=".0f", none="–"):
    if v is None:
        return none
    if isinstance(v, str):
        return v
    return format(v, spec)


def png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


# === percentile curves ===

# x axis of a percentile plot: 1 / (1 - p), log scale, so 90, 99, 99.9 and
# 99.99 are evenly spaced (the HdrHistogram convention).
TICKS = [50, 90, 99, 99.9, 99.99]


def to_x(p):
    return 1.0 / (1.0 - min(p, 99.999) / 100.0)


def curve_from(percentiles, histogram=None):
    """(percentile, ms) points, sorted: the percentile table, refined with
    the cumulative histogram where there is one."""
    points = {}
    for k, v in (percentiles or {}).items():
        try:
            p = float(k)
        except ValueError:
            continue
        if v is not None and 0 < p < 100:
            points[p] = v
    if histogram:
        buckets = sorted((float(k), n) for k, n in histogram.items())
        total = sum(n for _, n in buckets)
        seen = 0
        for ms, n in buckets:
            seen += n
            p = 100.0 * seen / total if total else 0
            if 0 < p < 100:
                points.setdefault(round(p, 4), ms)
    return sorted(points.items())


def percentile_plot(title, curves):
    """curves: [(label, [(p, ms)...])]. None if there is nothing to draw."""
    curves = [(label, pts) for label, pts in curves if len(pts) >= 2]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label, pts in curves:
        name = label.split()[0]
        ax.plot(
            [to_x(p) for p, _ in pts],
            [ms for _, ms in pts],
            label=label,
            color=COLORS.get(name, "#999999"),
            # A histogram-refined curve has hundreds of points: no markers.
            marker="." if len(pts) <= 40 else None,
            linewidth=1.5,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(FixedLocator([to_x(p) for p in TICKS]))
    ax.xaxis.set_major_formatter(FixedFormatter([f"{p:g}%" for p in TICKS]))
    ax.xaxis.set_minor_locator(FixedLocator([]))
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency, ms (log)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig)


def bar_plot(title, names, values, ylabel, stacked=None):
    """One bar per proxy; stacked: [(label, values)] draws stacked bars."""
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(7, 3))
    if stacked:
        bottom = [0.0] * len(names)
        for (label, vals), alpha in zip(stacked, (1.0, 0.45, 0.25)):
            vals = [v or 0 for v in vals]
            ax.bar(names, vals, bottom=bottom, label=label, alpha=alpha, color=[COLORS.get(n, "#999999") for n in names])
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.legend(fontsize=8)
    else:
        ax.bar(names, [v or 0 for v in values], color=[COLORS.get(n, "#999999") for n in names])
        for i, v in enumerate(values):
            if v is not None:
                ax.annotate(f"{v:,.0f}", (i, v), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    return png(fig)


# === one scenario ===


class Section:
    """What one scenario contributes: a headline state, tables (header,
    rows), plots (title, base64 PNG) and notes, for both outputs."""

    def __init__(self, scenario):
        self.scenario = scenario
        self.state = "not measured yet"
        self.why = ""
        self.tables = []
        self.plots = []
        self.notes = list(scenario.notes)
        self.noisy = False  # other processes took CPU during a run


def ratio(a, b):
    return a / b if a is not None and b else None


def load_section(sec, d, label=""):
    """A bench/load.sh report; label names the part of the scenario."""
    pre = f"{label}: " if label else ""
    results = {r["proxy"]: r for r in d["results"]}
    names = [n for n in ORDER if n in results]
    cpu = d.get("proxy_core_us_per_request", {})
    rounds = d.get("rounds", {})
    foreign = {n: max((r["cpu"]["foreign"] for r in rounds.get(n, [results[n]])), default=0) for n in names}
    rows = []
    for n in names:
        r = results[n]
        lat = r["latency_ms"]
        us = cpu.get(n) or r["proxy_core_us_per_request"]
        rows.append(
            [
                n,
                fmt(r["rps"]),
                fmt(r.get("rps_per_proxy_cpu")),
                fmt(lat.get("p50"), ".3f"),
                fmt(lat.get("p99"), ".3f"),
                fmt(lat.get("p999"), ".3f"),
                fmt(us["user"], ".2f"),
                fmt(us["kernel"], ".2f"),
                fmt(sum(r["errors"].values()), "d"),
                f"{foreign[n]:.0%}",
            ]
        )
    s = d["settings"]
    sec.tables.append(
        (
            f"{pre}Closed loop (wrk, {s['connections']} connections, {s['seconds']} s per proxy, "
            f"{s['rounds']} round(s); each proxy's median round; CPU per request: median over rounds)",
            [
                "proxy",
                "req/s",
                "req/s per proxy CPU",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "user µs/req",
                "kernel µs/req",
                "errors",
                "foreign CPU",
            ],
            rows,
        )
    )
    ratios = d.get("ratios", {})
    if ratios:
        rrows = []
        for k, v in ratios.items():
            peer = k.split("/")[1]
            pu, ou = cpu.get("portico"), cpu.get(peer)
            user = ratio(pu and pu["user"], ou and ou["user"])
            rrows.append(
                [k, fmt(v["rps"], ".2f"), fmt(v["rps_per_proxy_cpu"], ".2f"), fmt(v["p50"], ".2f"),
                 fmt(v["p99"], ".2f"), fmt(user, ".2f")]
            )
        sec.tables.append(
            (
                f"{pre}Ratios portico/peer (median of the ratios within each round; req/s: higher is better "
                "for portico, latency and CPU: lower is)",
                ["ratio", "req/s", "req/s per proxy CPU", "p50", "p99", "user µs/req"],
                rrows,
            )
        )
    sec.plots.append(("req/s", bar_plot(f"{pre}req/s (median round)", names, [results[n]["rps"] for n in names], "req/s")))
    sec.plots.append(
        (
            "CPU per request on the proxy core",
            bar_plot(
                f"{pre}CPU per request on the proxy core (µs)",
                names,
                None,
                "µs per request",
                stacked=[
                    ("user", [(cpu.get(n) or {}).get("user") for n in names]),
                    ("kernel", [(cpu.get(n) or {}).get("kernel") for n in names]),
                ],
            ),
        )
    )
    closed = [(n, curve_from(results[n].get("percentiles_ms"))) for n in names]
    if any(len(c) >= 2 for _, c in closed):
        sec.plots.append(
            (
                "Latency by percentile, closed loop",
                percentile_plot(f"{pre}wrk, closed loop at saturation (understates stalls)", closed),
            )
        )
    ol = d.get("open_loop_latency") or {}
    by_round = ol.get("by_round") or {}
    for rate in ol.get("rates") or []:
        curves, lrows = [], []
        for n in ("direct",) + tuple(names):
            runs = (by_round.get(n) or {}).get(str(rate)) or []
            if not runs:
                continue
            # The median run by p99 stands for the proxy at this rate.
            run = sorted(runs, key=lambda r: r["latency_ms"]["p99"] or 0)[(len(runs) - 1) // 2]
            curves.append((n, curve_from(run.get("percentiles_ms"), run.get("histogram_ms"))))
            lat = run["latency_ms"]
            lrows.append([n, fmt(run["rps"]), fmt(lat["p50"], ".3f"), fmt(lat["p99"], ".3f"),
                          fmt(lat["p999"], ".3f"), fmt(run["errors"], "d")])
        sec.tables.append(
            (
                f"Open loop at {rate} req/s (oha --latency-correction, {ol.get('seconds')} s; the run with "
                "the median p99; direct: the upstream alone, the floor)",
                ["proxy", "achieved req/s", "p50 ms", "p99 ms", "p99.9 ms", "errors"],
                lrows,
            )
        )
        sec.plots.append(
            (f"Latency by percentile at {rate} req/s", percentile_plot(f"open loop, {rate} req/s (oha)", curves))
        )
    if not ol.get("rates") and s.get("tls") != "handshake" and s.get("conn", "keepalive") == "keepalive":
        sec.notes.append("No open-loop phase in this run (no oha, or BENCH_LATENCY_RATES empty).")
    noisy = [n for n in names if foreign[n] > FOREIGN_LIMIT]
    if noisy:
        sec.noisy = True
        sec.notes.append(
            "Other processes used more than "
            f"{FOREIGN_LIMIT:.0%} of a core during the runs of: {', '.join(noisy)}. "
            "These figures are not results; rerun on a quiet machine."
        )


def table_section(sec, d):
    """A scenario's own JSON: {"columns": [[key, label]...], "results":
    [{"proxy": ..., key: value}], "notes": [...], "curves": {proxy:
    {percentile: ms}}}."""
    cols = d["columns"]
    rows = []
    for r in sorted(d["results"], key=lambda r: ORDER.index(r["proxy"]) if r["proxy"] in ORDER else 99):
        cells = []
        for key, _label, *spec in cols:
            v = r.get(key)
            cells.append(fmt(v, spec[0] if spec else ".0f") if not isinstance(v, bool) else str(v))
        rows.append(cells)
    sec.tables.append((d.get("caption", ""), [c[1] for c in cols], rows))
    noisy = [r["proxy"] for r in d["results"] if (r.get("foreign_cpu") or 0) > FOREIGN_LIMIT]
    if noisy:
        sec.noisy = True
        sec.notes.append(
            f"Other processes used more than {FOREIGN_LIMIT:.0%} of a core during the runs of: "
            f"{', '.join(noisy)}. These figures are not results; rerun on a quiet machine."
        )
    sec.notes.extend(d.get("notes", []))
    curves = d.get("curves") or {}
    if curves:
        sec.plots.append(
            ("Latency by percentile", percentile_plot(d.get("curve_title", "latency"), [(n, curve_from(c)) for n, c in curves.items()]))
        )
    bars = d.get("bar")
    if bars:
        names = [r["proxy"] for r in d["results"] if r.get(bars["key"]) is not None]
        sec.plots.append((bars["title"], bar_plot(bars["title"], names, [r[bars["key"]] for r in d["results"] if r.get(bars["key"]) is not None], bars["ylabel"])))


def section(scenario, data):
    sec = Section(scenario)
    st = load_json(os.path.join(data, f"{scenario.id}.status.json"))
    d = load_json(os.path.join(data, f"{scenario.id}.json"))
    if st:
        sec.state, sec.why = st["status"], st.get("why", "")
    else:
        sec.why = "not run (not in BENCH_SCENARIOS)"
    parts = [(load_json(os.path.join(data, f"{scenario.id}-{suffix}.json")), label) for suffix, label in scenario.parts]
    if not scenario.parts:
        parts = [(d, "")]
    if sec.state == "measured" and not any(p for p, _ in parts):
        sec.state, sec.why = "failed", "the scenario wrote no results"
    if sec.state == "measured":
        try:
            for d, label in parts:
                if d is None:
                    sec.notes.append(f"{label}: no results.")
                elif "proxy_core_us_per_request" in d:
                    load_section(sec, d, label)
                else:
                    table_section(sec, d)
        except (KeyError, TypeError, ValueError) as e:
            sec.state, sec.why = "failed", f"unreadable results: {e!r}"
            sec.tables, sec.plots = [], []
    sec.plots = [(t, p) for t, p in sec.plots if p]
    return sec


# === output ===


def headline(sec):
    if sec.state == "measured":
        return "measured"
    return f"{sec.state}: {sec.why}" if sec.why else sec.state


def noisy_warning(sections):
    noisy = [s.scenario.title for s in sections if s.noisy]
    if not noisy:
        return None
    return (
        f"Not a result: other processes used the CPU during {len(noisy)} scenario(s) "
        f"({'; '.join(noisy)}); see each one's foreign CPU column, and rerun on a quiet machine."
    )


def markdown(machine, sections):
    out = ["# Portico against nginx, haproxy, Caddy and Traefik", ""]
    warning = noisy_warning(sections)
    if warning:
        out += [f"**{warning}**", ""]
    out.append(machine_md(machine))
    out.append("")
    out.append("| # | scenario | state |")
    out.append("| --- | --- | --- |")
    for i, sec in enumerate(sections, 1):
        out.append(f"| {i} | {sec.scenario.title} | {headline(sec)} |")
    for i, sec in enumerate(sections, 1):
        out += ["", f"## {i}. {sec.scenario.title}", "", sec.scenario.what, ""]
        if sec.state != "measured":
            out += [f"**{headline(sec)}**", ""]
        for caption, header, rows in sec.tables:
            out += [f"*{caption}*", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
            out += ["| " + " | ".join(r) + " |" for r in rows]
            out.append("")
        for n in sec.notes:
            out.append(f"- {n}")
    out += ["", "Plots: index.html beside this file.", ""]
    return "\n".join(out)


MACHINE_KEYS = [
    ("cpu_model", "CPU"),
    ("nproc", "cores"),
    ("kernel", "kernel"),
    ("os", "OS"),
    ("placement", "placement"),
    ("date", "measured"),
]
VERSION_KEYS = ["portico", "rustc", "nginx", "haproxy", "caddy", "traefik", "wrk", "oha", "h2load", "openssl", "python", "matplotlib"]


def machine_md(m):
    lines = [f"- {label}: {m[k]}" for k, label in MACHINE_KEYS if m.get(k)]
    lines.append("- versions: " + "; ".join(f"{k} {m[k]}" if not m[k].startswith(k) else m[k] for k in VERSION_KEYS if m.get(k)))
    lines.append(
        "- same for every proxy: placement, an access log line per request (to /dev/null), "
        "keep-alive to the upstream, one worker (GOMAXPROCS=1 for the Go proxies)"
    )
    return "\n".join(lines)


CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: 4px; }
.state { font-weight: bold; }
.missing { color: #a00; }
img { max-width: 100%; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
"""


def page(machine, sections):
    e = html.escape
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>Portico benchmark report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Portico against nginx, haproxy, Caddy and Traefik</h1>",
        "<p>Figures are measured and reported, never asserted. A run where other processes "
        "used the CPU (the <em>foreign CPU</em> column) is not a result.</p>",
    ]
    warning = noisy_warning(sections)
    if warning:
        out.append(f"<p class='state missing'>{e(warning)}</p>")
    out += [
        "<h2>Machine</h2><ul>",
    ]
    out += [f"<li>{e(line[2:])}</li>" for line in machine_md(machine).splitlines()]
    out.append("</ul><h2>Scenarios</h2><table><tr><th>#</th><th>scenario</th><th>state</th></tr>")
    for i, sec in enumerate(sections, 1):
        cls = "" if sec.state == "measured" else " class='missing'"
        out.append(
            f"<tr><td>{i}</td><td><a href='#{sec.scenario.id}'>{e(sec.scenario.title)}</a></td>"
            f"<td{cls}>{e(headline(sec))}</td></tr>"
        )
    out.append("</table>")
    for i, sec in enumerate(sections, 1):
        out.append(f"<h2 id='{sec.scenario.id}'>{i}. {e(sec.scenario.title)}</h2><p>{e(sec.scenario.what)}</p>")
        if sec.state != "measured":
            out.append(f"<p class='state missing'>{e(headline(sec))}</p>")
        for caption, header, rows in sec.tables:
            out.append(f"<table><caption>{e(caption)}</caption><tr>")
            out += [f"<th>{e(h)}</th>" for h in header]
            out.append("</tr>")
            for r in rows:
                out.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>")
            out.append("</table>")
        if sec.plots:
            out.append("<div class='plots'>")
            out += [f"<figure><img alt='{e(t)}' src='data:image/png;base64,{p}'></figure>" for t, p in sec.plots]
            out.append("</div>")
        if sec.notes:
            out.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in sec.notes) + "</ul>")
    out.append(
        "<h2>How to read it</h2><ul>"
        "<li>req/s per proxy CPU: req/s divided by the share of a core the proxy's processes used; "
        "it compares proxies even when the load core saturated first.</li>"
        "<li>user/kernel µs per request: CPU time on the proxy core (which runs nothing else of ours) "
        "per request; kernel includes loopback TCP, the same work for every proxy.</li>"
        "<li>Closed-loop (wrk) percentiles understate tail latency under stalls (coordinated omission); "
        "the open-loop (oha, fixed rate, latency corrected) curves do not.</li>"
        "<li>Percentile plots: x is the percentile on a 1/(1-p) log scale, so 90%, 99%, 99.9% "
        "are evenly spaced; lower curves are better.</li></ul>"
    )
    out.append("</body></html>")
    return "\n".join(out)


def main():
    if len(sys.argv) != 3:
        raise SystemExit("usage: report.py DATA_DIR OUT_DIR")
    data, out = sys.argv[1], sys.argv[2]
    machine = key_values(os.path.join(data, "machine.txt"))
    sections = [section(s, data) for s in SCENARIOS]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "index.html"), "w") as f:
        f.write(page(machine, sections))
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(markdown(machine, sections))
    measured = sum(s.state == "measured" for s in sections)
    print(f"report: {measured} of {len(sections)} scenarios measured; written {out}/index.html and {out}/summary.md")


if __name__ == "__main__":
    main()
