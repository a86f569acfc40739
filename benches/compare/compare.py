#!/usr/bin/env python3
"""Side-by-side comparison of replicore with Redis, PostgreSQL and etcd on this machine, in
one run, on 127.0.0.1. Run by hand as root on Debian 12 (it installs Debian's packages),
never in CI:

    python3 benches/compare/compare.py                 # about 10 minutes
    python3 benches/compare/compare.py --seconds 2 --replicas 2 --no-install   # a quick look

Every load is driven by one client program, `examples/loadgen.rs` (except PostgreSQL, driven
by its own pgbench), so the systems are measured by the same client code on the same runtime:

- floor: loopback TCP round trip, fsync of a small append and of a write into a
  preallocated file, and replicore's own durable save (one redb transaction of one key);
- replicore: a master and N slaves (embedding API, TCP with TLS 1.3 under keys derived from
  the cluster key, the default transport; redb with fsync on every save),
  one-phase and two-phase updates from 1, 16 and 256 TCP clients (`--clients`), the same again
  over plain TCP (`loadgen replicore --plain`) for the cost of TLS, one-phase through the
  master's embedding API with 16 updates in flight (its "pipelined" form), and batching
  emulated: one client whose every update is a batch of 16 puts committed as one version;
- Redis 7 (redis-server): a primary and N replicas, once with `appendonly yes` +
  `appendfsync always` on every node (the durability replicore has), once with no
  persistence, and once durable with TLS on every client and replication link (a CA and a
  certificate for 127.0.0.1 made with openssl); SET from 1, 16 and 256 clients, SET 16 deep
  pipelined, SET + WAIT N;
- PostgreSQL 15 with one synchronous standby (synchronous_commit=on): pgbench, a
  single-row INSERT per transaction, 1, 16 and 256 clients (max_connections raised to fit),
  the clients once over plain TCP (sslmode=disable) and once over TLS (sslmode=require); the
  server has `ssl = on` with a self-signed certificate, so its replication link is TLS in both;
- etcd 3.4, three members: put through its HTTP/JSON gateway, 1, 16 and 256 clients.

The 256-client rows answer etcd's published 44 k puts/s at 1,000 clients on 8 cores with
where each system stands on this machine at many clients.

It prints the table and writes it into docs/benchmarks.md between the markers
`<!-- compare:begin -->` and `<!-- compare:end -->` (the rest of the file is kept).
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"
PG_BIN = "/usr/lib/postgresql/15/bin"
PACKAGES = ["redis-server", "redis-tools", "postgresql", "etcd-server", "etcd-client"]

started = []  # (description, Popen) of every server this run started


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, pred, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return
        except (subprocess.CalledProcessError, OSError, ValueError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"compare: {what} not ready after {timeout:.0f} s")


def spawn(desc, cmd, logfile, **kw):
    out = open(logfile, "w")
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **kw)
    started.append((desc, p))
    return p


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def loadgen(args, *argv):
    out = sh([args.loadgen, *map(str, argv)])
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------- replicore


def run_replicore(args, results):
    for n in args.replicas:
        common = ["--slaves", n, "--seconds", args.seconds, "--dir", args.work, "--value-bytes", 100]
        for clients in args.clients:
            log(f"replicore: {n} slave(s), {clients} client(s)")
            results[("rc", "1p", n, clients)] = loadgen(args, "replicore", "--mode", "one", "--clients", clients, *common)
            results[("rc", "2p", n, clients)] = loadgen(args, "replicore", "--mode", "two", "--clients", clients, *common)
            # The same over plain TCP: what TLS costs (every row above is TLS).
            for mode, tag in (("one", "1p"), ("two", "2p")):
                results[("rc-plain", tag, n, clients)] = loadgen(
                    args, "replicore", "--mode", mode, "--clients", clients, "--plain", *common)
        results[("rc", "1p-pipe", n)] = loadgen(args, "replicore", "--mode", "one", "--pipeline", 16, *common)
        # Batching emulated with today's protocol: one client whose every update is a batch of
        # 16 puts, committed as one version (one save per node, one announcement or one
        # prepare/commit round), as a batching master would commit 16 clients' updates.
        for mode, tag in (("one", "1p-batch16"), ("two", "2p-batch16")):
            results[("rc", tag, n)] = loadgen(args, "replicore", "--mode", mode, "--clients", 1, "--batch", 16, *common)


# ---------------------------------------------------------------- Redis


def redis_cli(port, *cmd, tls=None):
    secure = ["--tls", "--cacert", os.path.join(tls, "ca.crt")] if tls else []
    return sh(["redis-cli", *secure, "-h", "127.0.0.1", "-p", str(port), *cmd])


def tls_certificates(d):
    """A CA and a certificate for 127.0.0.1 signed by it, in `d` (ca.crt, server.crt, server.key)."""
    os.makedirs(d, exist_ok=True)
    j = lambda name: os.path.join(d, name)
    sh(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=compare-ca",
        "-keyout", j("ca.key"), "-out", j("ca.crt")])
    sh(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", j("server.key"), "-out", j("server.csr")])
    with open(j("ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    sh(["openssl", "x509", "-req", "-in", j("server.csr"), "-CA", j("ca.crt"), "-CAkey", j("ca.key"),
        "-CAcreateserial", "-days", "2", "-out", j("server.crt"), "-extfile", j("ext")])
    return d


def start_redis(args, replicas, durable, tls=None):
    """A primary and `replicas` replicas; with `tls` (a directory from `tls_certificates`) every
    client and replication link is TLS and no plain port is open."""
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    nodes = []
    primary = None
    for i in range(replicas + 1):
        port = free_port()
        d = os.path.join(args.work, f"redis-{replicas}-{int(durable)}-{int(bool(tls))}-{i}")
        os.makedirs(d)
        listen = ["--port", str(port)]
        if tls:
            listen = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", os.path.join(tls, "server.crt"),
                      "--tls-key-file", os.path.join(tls, "server.key"), "--tls-ca-cert-file",
                      os.path.join(tls, "ca.crt"), "--tls-auth-clients", "no", "--tls-replication", "yes"]
        cmd = ["redis-server", *listen, "--bind", "127.0.0.1", "--dir", d, "--save", "",
               "--protected-mode", "no", *persistence]
        if primary is not None:
            cmd += ["--replicaof", "127.0.0.1", str(primary)]
        p = spawn(f"redis {port}", cmd, os.path.join(d, "log"))
        wait_until(f"redis on {port}", lambda: "PONG" in redis_cli(port, "ping", tls=tls))
        nodes.append(p)
        if primary is None:
            primary = port

    def replicated():
        info = redis_cli(primary, "info", "replication", tls=tls)
        return info.count("state=online") == replicas

    wait_until("redis replication", replicated)
    return primary, nodes


def run_redis(args, results):
    certs = tls_certificates(os.path.join(args.work, "redis-tls"))
    for n in args.replicas:
        # appendfsync always over TLS: the fair reference for replicore's TLS rows.
        for durable, tls in ((True, None), (False, None), (True, certs)):
            tag = ("always" if durable else "nofsync") + ("-tls" if tls else "")
            log(f"redis: {n} replica(s), {tag}")
            port, nodes = start_redis(args, n, durable, tls)
            addr = f"127.0.0.1:{port}"
            common = ["--addr", addr, "--seconds", args.seconds, "--value-bytes", 100]
            if tls:
                common += ["--tls-ca", os.path.join(tls, "ca.crt")]
            try:
                for clients in args.clients:
                    results[("redis", "set", tag, n, clients)] = loadgen(args, "redis", "--clients", clients, *common)
                    results[("redis", "wait", tag, n, clients)] = loadgen(
                        args, "redis", "--clients", clients, "--wait", n, *common)
                results[("redis", "set-pipe", tag, n)] = loadgen(args, "redis", "--clients", 16, "--depth", 16, *common)
                if n == 2 and not durable:
                    # A cross-check with Redis's own tool: 16 clients, 16-deep pipelines.
                    out = sh(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set", "-n", "400000",
                              "-c", "16", "-P", "16", "-d", "100", "-q", "-r", "100000"])
                    rps = [float(w) for line in out.replace("\r", "\n").splitlines() if "requests per second" in line
                           for w in line.split() if w.replace(".", "").isdigit()]
                    if rps:
                        results[("redis-benchmark", "set-pipe", n)] = {"ops_per_sec": rps[-1]}
            finally:
                for p in reversed(nodes):
                    stop(p)


# ---------------------------------------------------------------- PostgreSQL


def as_postgres(cmd, **kw):
    return sh(["runuser", "-u", "postgres", "--", *cmd], **kw)


def run_postgres(args, results):
    log("postgres: primary + one synchronous standby")
    base = os.path.join(args.work, "pg")
    os.makedirs(base)
    shutil.chown(base, "postgres", "postgres")
    primary, standby = os.path.join(base, "primary"), os.path.join(base, "standby")
    p1, p2 = free_port(), free_port()
    as_postgres([f"{PG_BIN}/initdb", "-D", primary, "-A", "trust", "-U", "postgres"])
    with open(os.path.join(primary, "postgresql.conf"), "a") as f:
        f.write(f"\nport = {p1}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{base}'\n"
                "wal_level = replica\nmax_wal_senders = 4\nfsync = on\nsynchronous_commit = on\n"
                "synchronous_standby_names = '*'\n"
                # The default (100) refuses the 256-client run; the standby inherits it.
                f"max_connections = {max(args.clients) + 20}\n")
    with open(os.path.join(primary, "pg_hba.conf"), "a") as f:
        f.write("host replication postgres 127.0.0.1/32 trust\n")
    # TLS on the server (a self-signed certificate): the TLS rows' clients ask for it, and the
    # standby's replication link (sslmode=prefer) takes it.
    sh(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
        "-keyout", os.path.join(primary, "server.key"), "-out", os.path.join(primary, "server.crt")])
    for name in ("server.key", "server.crt"):
        shutil.chown(os.path.join(primary, name), "postgres", "postgres")
    os.chmod(os.path.join(primary, "server.key"), 0o600)
    with open(os.path.join(primary, "postgresql.conf"), "a") as f:
        f.write("ssl = on\n")
    servers = []
    try:
        as_postgres([f"{PG_BIN}/pg_ctl", "-D", primary, "-l", os.path.join(base, "primary.log"), "-w", "start"])
        servers.append(primary)
        as_postgres([f"{PG_BIN}/pg_basebackup", "-h", "127.0.0.1", "-p", str(p1), "-U", "postgres",
                     "-D", standby, "-R", "-X", "stream"])
        with open(os.path.join(standby, "postgresql.conf"), "a") as f:
            f.write(f"\nport = {p2}\n")
        as_postgres([f"{PG_BIN}/pg_ctl", "-D", standby, "-l", os.path.join(base, "standby.log"), "-w", "start"])
        servers.append(standby)
        psql = ["psql", "-h", "127.0.0.1", "-p", str(p1), "-U", "postgres", "-At", "-c"]
        wait_until("the synchronous standby", lambda: "sync" in sh(
            [*psql, "select sync_state from pg_stat_replication"]).split())
        sh([*psql, "create table t (id bigserial primary key, v text not null)"])
        script = os.path.join(base, "insert.sql")
        with open(script, "w") as f:
            f.write("insert into t (v) values (repeat('x', 100));\n")
        os.chmod(script, 0o644)
        for (tag, sslmode), clients in ((t, c) for t in (("pg", "disable"), ("pg-tls", "require"))
                                        for c in args.clients):
            logdir = os.path.join(base, f"log-{tag}-{clients}")
            os.makedirs(logdir)
            shutil.chown(logdir, "postgres", "postgres")
            out = as_postgres(["env", f"PGSSLMODE={sslmode}", "pgbench", "-n", "-h", "127.0.0.1", "-p", str(p1), "-U", "postgres",
                               "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(int(args.seconds)),
                               "-f", script, "-l", "--log-prefix", os.path.join(logdir, "tx"), "postgres"],
                              cwd=base)
            tps = next(float(line.split()[2]) for line in out.splitlines() if line.startswith("tps ="))
            lat = []
            for name in os.listdir(logdir):
                with open(os.path.join(logdir, name)) as f:
                    lat += [int(line.split()[2]) for line in f if line.strip()]
            lat.sort()
            results[(tag, clients)] = {
                "ops_per_sec": round(tps),
                "p50_us": lat[len(lat) // 2] if lat else 0,
                "p99_us": lat[int((len(lat) - 1) * 0.99)] if lat else 0,
                "ops": len(lat),
            }
    finally:
        for d in reversed(servers):
            subprocess.run(["runuser", "-u", "postgres", "--", f"{PG_BIN}/pg_ctl", "-D", d, "-m", "fast", "-w", "stop"],
                           capture_output=True)


# ---------------------------------------------------------------- etcd


def run_etcd(args, results):
    log("etcd: three members")
    peers = [(f"e{i}", free_port(), free_port()) for i in range(3)]
    cluster = ",".join(f"{n}=http://127.0.0.1:{pp}" for n, _, pp in peers)
    procs = []
    try:
        for name, cp, pp in peers:
            d = os.path.join(args.work, f"etcd-{name}")
            os.makedirs(d)
            procs.append(spawn(f"etcd {name}", [
                "etcd", "--name", name, "--data-dir", d,
                "--listen-client-urls", f"http://127.0.0.1:{cp}", "--advertise-client-urls", f"http://127.0.0.1:{cp}",
                "--listen-peer-urls", f"http://127.0.0.1:{pp}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{pp}",
                "--initial-cluster", cluster, "--initial-cluster-state", "new", "--initial-cluster-token", "compare",
            ], os.path.join(args.work, f"etcd-{name}.log")))
        endpoints = [f"127.0.0.1:{cp}" for _, cp, _ in peers]
        env = dict(os.environ, ETCDCTL_API="3")
        ctl = ["etcdctl", "--endpoints", ",".join(endpoints)]
        # etcdctl prints the health of each endpoint on stderr.
        health = lambda: subprocess.run([*ctl, "endpoint", "health"], env=env, capture_output=True, text=True)  # noqa: E731
        wait_until("etcd", lambda: (health().stdout + health().stderr).count("is healthy") == 3, timeout=60)
        status = json.loads(sh([*ctl, "endpoint", "status", "-w", "json"], env=env))
        leader = [s["Endpoint"].removeprefix("http://") for s in status
                  if s["Status"]["leader"] == s["Status"]["header"]["member_id"]]
        ordered = leader + [e for e in endpoints if e not in leader]
        for clients in args.clients:
            results[("etcd", clients)] = loadgen(args, "etcd", "--endpoints", ",".join(ordered), "--clients", clients,
                                                 "--seconds", args.seconds, "--value-bytes", 100)
    finally:
        for p in reversed(procs):
            stop(p)


# ---------------------------------------------------------------- the table


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} × {cpu}, {mem:.0f} GiB, Linux {platform.release()}"


def version(cmd):
    try:
        return sh(cmd).strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "?"


def fmt_us(v):
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"


def table(args, r, load_before, load_after, when):
    rows = []  # (measure, replicore figure, reference name, reference figure, ratio, better)

    def row(measure, rc, ref_name, ref, kind):
        if rc is None or ref is None:
            return
        if kind == "tput":
            a, b = rc["ops_per_sec"], ref["ops_per_sec"]
            ratio = a / b if b else float("nan")
            rows.append((measure, f"{a:,.0f}/s", ref_name, f"{b:,.0f}/s", f"{ratio:.2f}×"))
        else:
            key = "all_slaves_p50_us" if "all_slaves_p50_us" in rc else "p50_us"
            a, b = rc[key], ref["p50_us"]
            ratio = a / b if b else float("nan")
            rows.append((measure, fmt_us(a), ref_name, fmt_us(b), f"{ratio:.2f}×"))

    g = r.get
    many_clients = [c for c in args.clients if c > 1]
    for n in args.replicas:
        s = f"{n} slave{'s' if n > 1 else ''}"
        for tag, label in (("nofsync", "no fsync"), ("always", "appendfsync always")):
            row(f"one-phase, 1 client, {s} (updates/s to all)", g(("rc", "1p", n, 1)),
                f"Redis SET, 1 client, {label}", g(("redis", "set", tag, n, 1)), "tput")
            for c in many_clients:
                row(f"one-phase, {c} clients, {s}", g(("rc", "1p", n, c)),
                    f"Redis SET, {c} clients, {label}", g(("redis", "set", tag, n, c)), "tput")
            row(f"one-phase, 16 in flight (embedded), {s}", g(("rc", "1p-pipe", n)),
                f"Redis SET, 16 clients × 16 pipelined, {label}", g(("redis", "set-pipe", tag, n)), "tput")
            row(f"one-phase, batches of 16 (batching emulated), {s}", g(("rc", "1p-batch16", n)),
                f"Redis SET, 16 clients × 16 pipelined, {label}", g(("redis", "set-pipe", tag, n)), "tput")
        for tag, label in (("always", "appendfsync always"), ("nofsync", "no fsync")):
            row(f"two-phase p50 to commit on all, 1 client, {s}", g(("rc", "2p", n, 1)),
                f"Redis SET+WAIT {n} p50, 1 client, {label}", g(("redis", "wait", tag, n, 1)), "lat")
            row(f"two-phase, 1 client, {s}", g(("rc", "2p", n, 1)),
                f"Redis SET+WAIT {n}, 1 client, {label}", g(("redis", "wait", tag, n, 1)), "tput")
            for c in many_clients:
                row(f"two-phase, {c} clients, {s}", g(("rc", "2p", n, c)),
                    f"Redis SET+WAIT {n}, {c} clients, {label}", g(("redis", "wait", tag, n, c)), "tput")
            row(f"two-phase, batches of 16 (group commit emulated), {s}", g(("rc", "2p-batch16", n)),
                f"Redis SET+WAIT {n}, 16 clients, {label}", g(("redis", "wait", tag, n, 16)), "tput")
        # TLS on both sides: replicore's rows (TLS) against Redis over TLS, appendfsync always.
        for c in args.clients:
            clients = f"{c} client{'s' if c > 1 else ''}"
            row(f"one-phase, {clients}, {s}, TLS", g(("rc", "1p", n, c)),
                f"Redis SET, {clients}, appendfsync always, TLS", g(("redis", "set", "always-tls", n, c)), "tput")
            row(f"two-phase, {clients}, {s}, TLS", g(("rc", "2p", n, c)),
                f"Redis SET+WAIT {n}, {clients}, appendfsync always, TLS", g(("redis", "wait", "always-tls", n, c)),
                "tput")
        if g(("redis-benchmark", "set-pipe", n)):
            row(f"one-phase, 16 in flight (embedded), {s}", g(("rc", "1p-pipe", n)),
                "redis-benchmark SET -c 16 -P 16, no fsync", g(("redis-benchmark", "set-pipe", n)), "tput")
    # The cost of TLS: replicore's rows (TLS) against the same loads over plain TCP.
    for n in args.replicas:
        s = f"{n} slave{'s' if n > 1 else ''}"
        for tag, label in (("1p", "one-phase"), ("2p", "two-phase")):
            for c in args.clients:
                clients = f"{c} client{'s' if c > 1 else ''}"
                row(f"{label}, {clients}, {s}, TLS", g(("rc", tag, n, c)),
                    f"replicore over plain TCP, the same load", g(("rc-plain", tag, n, c)), "tput")
    two = 2 if 2 in args.replicas else args.replicas[0]
    s = f"{two} slave{'s' if two > 1 else ''}"
    # TLS on both sides: replicore's rows (TLS) against PostgreSQL's clients over TLS.
    for c in args.clients:
        clients = f"{c} client{'s' if c > 1 else ''}"
        row(f"two-phase, {clients}, {s}, TLS", g(("rc", "2p", two, c)),
            f"PostgreSQL sync standby, {clients}, TLS", g(("pg-tls", c)), "tput")
    row(f"two-phase p50 to commit on all, 1 client, {s}", g(("rc", "2p", two, 1)),
        "PostgreSQL sync standby INSERT p50, 1 client", g(("pg", 1)), "lat")
    row(f"two-phase, 1 client, {s}", g(("rc", "2p", two, 1)), "PostgreSQL sync standby, 1 client", g(("pg", 1)), "tput")
    for c in many_clients:
        row(f"two-phase, {c} clients, {s}", g(("rc", "2p", two, c)), f"PostgreSQL sync standby, {c} clients",
            g(("pg", c)), "tput")
    row(f"two-phase, batches of 16 (group commit emulated), {s}", g(("rc", "2p-batch16", two)),
        "PostgreSQL sync standby, 16 clients", g(("pg", 16)), "tput")
    row(f"two-phase p50 to commit on all, 1 client, {s}", g(("rc", "2p", two, 1)), "etcd put p50, 1 client",
        g(("etcd", 1)), "lat")
    for c in many_clients:
        row(f"two-phase, {c} clients, {s}", g(("rc", "2p", two, c)), f"etcd put, {c} clients", g(("etcd", c)), "tput")

    floors = [v for k, v in r.items() if isinstance(k, str) and k.startswith("floor ")]

    def span(key):
        vals = [x[key] for x in floors if key in x]
        if not vals:
            return "not measured"
        lo, hi = min(vals), max(vals)
        return fmt_us(lo) if lo == hi else f"{fmt_us(lo)} to {fmt_us(hi)}"

    # The strictest floor: the fastest p50 of each measure over the run.
    f = {key: min(x[key] for x in floors) for key in floors[0]} if floors else {}
    lines = [
        f"Run of {when} UTC, {args.seconds:g} s per figure, 100-byte values. Machine: {machine()}; "
        f"load average {load_before} before, {load_after} after.",
        "",
        f"Versions: replicore {version(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'])}, "
        f"{version(['redis-server', '--version'])}, {version([PG_BIN + '/postgres', '--version'])}, "
        f"{version(['etcd', '--version'])}, {version(['rustc', '--version'])}.",
        "",
        f"Physical floor (same run, measured {len(floors)} times: before each system and at the end; "
        "the lowest and highest p50): "
        f"loopback TCP round trip p50 {span('tcp_rtt_p50_us')}; "
        f"fsync of a 100-byte append p50 {span('fsync_append_p50_us')}; "
        f"into a preallocated file p50 {span('fsync_prealloc_p50_us')}; "
        f"replicore's durable save of one key (one redb transaction) p50 {span('redb_save_p50_us')}; "
        f"of 16 keys in one transaction p50 {span('redb_save16_p50_us')}. "
        "The targets below use the lowest.",
        "",
        "Ratio = replicore / reference: above 1 is better for throughput (/s), below 1 is better for latency.",
        "",
        "| replicore | figure | reference | figure | ratio |",
        "|---|---:|---|---:|---:|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    lines += ["", "The issue's targets, checked on this run's figures:", "",
              "| target | replicore | bound | met? |", "|---|---:|---:|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in targets(r, f)]
    lines += ["", "Raw figures (JSON lines of `loadgen` and pgbench), keyed by system, workload, replicas, clients:",
              "", "```text"]
    lines += [f"{'/'.join(map(str, k)) if isinstance(k, tuple) else k}: {json.dumps(v, sort_keys=True)}"
              for k, v in r.items()]
    lines += ["```"]
    return "\n".join(lines)


def targets(r, f):
    """The issue's targets: (what, replicore's figure, the bound, verdict with the factor)."""
    out = []

    def verdict(value, bound, higher_is_better):
        if not value or not bound:
            return "not measured"
        if higher_is_better:
            return "yes" if value >= bound else f"no: {bound / value:.1f}× short"
        return "yes" if value <= bound else f"no: {value / bound:.1f}× over"

    two = r.get(("rc", "2p", 2, 1))
    if two and f:
        floor = 2 * f["tcp_rtt_p50_us"] + 2 * f["fsync_append_p50_us"]
        v = two["all_slaves_p50_us"]
        out.append(("two-phase p50 to commit on 2 slaves, 1 client ≤ 2 × (2 round trips + 2 fsyncs)",
                    fmt_us(v), fmt_us(2 * floor), verdict(v, 2 * floor, False)))
    if two and r.get(("pg", 1)):
        v, b = two["all_slaves_p50_us"], r[("pg", 1)]["p50_us"]
        out.append(("two-phase p50, 2 slaves, 1 client ≤ PostgreSQL sync-standby commit p50",
                    fmt_us(v), fmt_us(b), verdict(v, b, False)))
    for load, many in (("16 clients", r.get(("rc", "2p", 2, 16))),
                       ("batches of 16, group commit emulated", r.get(("rc", "2p-batch16", 2)))):
        for key, name in ((("redis", "wait", "always", 2, 16), "Redis SET+WAIT 2, appendfsync always"),
                          (("pg", 16), "PostgreSQL sync standby"),
                          (("redis", "wait", "nofsync", 2, 16), "Redis SET+WAIT 2, no fsync")):
            if many and r.get(key):
                v, b = many["ops_per_sec"], 2 * r[key]["ops_per_sec"]
                out.append((f"two-phase, 2 slaves, {load} ≥ 2 × {name}, 16 clients",
                            f"{v:,.0f}/s", f"{b:,.0f}/s", verdict(v, b, True)))
    ones = [r.get(k) for k in (("rc", "1p", 2, 16), ("rc", "1p-pipe", 2), ("rc", "1p", 2, 1))]
    ones = [x["ops_per_sec"] for x in ones if x]
    for tag, name in (("nofsync", "no fsync"), ("always", "appendfsync always")):
        ref = r.get(("redis", "set-pipe", tag, 2))
        if ones and ref:
            v, b = max(ones), ref["ops_per_sec"]
            out.append((f"one-phase to 2 slaves (best of the three loads) ≥ Redis async SET pipelined, {name}",
                        f"{v:,.0f}/s", f"{b:,.0f}/s", verdict(v, b, True)))
        batched = r.get(("rc", "1p-batch16", 2))
        if batched and ref:
            v, b = batched["ops_per_sec"], ref["ops_per_sec"]
            out.append((f"one-phase to 2 slaves, batches of 16 (emulated) ≥ Redis async SET pipelined, {name}",
                        f"{v:,.0f}/s", f"{b:,.0f}/s", verdict(v, b, True)))
    return out


def write_doc(text):
    block = f"{BEGIN}\n{text}\n{END}"
    if os.path.exists(DOC):
        with open(DOC) as f:
            doc = f.read()
        if BEGIN in doc and END in doc:
            doc = doc[: doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
        else:
            doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    else:
        doc = "# Benchmarks\n\n" + block + "\n"
    with open(DOC, "w") as f:
        f.write(doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each figure")
    ap.add_argument("--replicas", default="1,2,4", help="comma-separated slave/replica counts")
    ap.add_argument("--clients", default="1,16,256", help="comma-separated client counts (1 and 16 feed the targets)")
    ap.add_argument("--only", default="floor,replicore,redis,postgres,etcd", help="which systems to run")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get install the references")
    ap.add_argument("--no-doc", action="store_true", help="print the table only")
    args = ap.parse_args()
    try:
        args.replicas = [int(x) for x in args.replicas.split(",")]
    except ValueError:
        raise SystemExit(f"compare: --replicas must be comma-separated numbers, not {args.replicas!r}")
    try:
        args.clients = [int(x) for x in args.clients.split(",")]
    except ValueError:
        raise SystemExit(f"compare: --clients must be comma-separated numbers, not {args.clients!r}")
    only = set(args.only.split(","))
    if os.geteuid() != 0:
        raise SystemExit("compare: run as root (it installs packages and runs PostgreSQL as user postgres)")
    if not args.no_install:
        log("installing " + " ".join(PACKAGES))
        sh(["apt-get", "install", "-y", "-q", *PACKAGES], env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    log("building the load generator")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "replicore", "--example", "loadgen"], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    args.loadgen = os.path.join(target, "release", "examples", "loadgen")
    # On the same disk as the rest of the system (not a tmpfs), so fsyncs are real.
    args.work = tempfile.mkdtemp(prefix="replicore-compare-", dir="/var/tmp")
    os.chmod(args.work, 0o755)
    load_before = " ".join(open("/proc/loadavg").read().split()[:3])
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    results = {}

    def floor(when):
        log(f"floor {when}")
        results[f"floor {when}"] = loadgen(args, "floor", "--dir", args.work, "--samples", 1000)

    systems = [("replicore", run_replicore), ("redis", run_redis), ("postgres", run_postgres), ("etcd", run_etcd)]
    try:
        for name, run in systems:
            if name not in only:
                continue
            # The floor is measured again before each system: other jobs on the machine make
            # the disk's fsync latency vary by an order of magnitude within minutes.
            if "floor" in only:
                floor(f"before {name}")
            # One system failing (a package missing, a server that does not start) leaves the
            # others' figures; the error is printed and kept with the raw figures.
            try:
                run(args, results)
            except (subprocess.CalledProcessError, OSError, ValueError, KeyError, SystemExit) as e:
                detail = getattr(e, "stderr", None) or ""
                log(f"compare: {name} failed: {e} {detail.strip()}")
                results[f"{name} failed"] = {"error": f"{e} {detail.strip()}"[:500]}
        if "floor" in only:
            floor("at the end")
    finally:
        for _, p in reversed(started):
            stop(p)
        shutil.rmtree(args.work, ignore_errors=True)
    load_after = " ".join(open("/proc/loadavg").read().split()[:3])
    text = table(args, results, load_before, load_after, when)
    print(text)
    if not args.no_doc:
        write_doc(text)
        log(f"written to {DOC}")


if __name__ == "__main__":
    main()
