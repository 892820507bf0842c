"""A load test across processes (issue 19, item 4; docs/benchmarks.md): K `sod serve` instances on loopback, driven
by N client processes (`sod serve bench --target ... --json`), each with C connections spread round-robin over the
instances, `POST /run_code` `print(1+1)`, bounded by a request count and a time budget. Prints one markdown row per K:
requests, ok, 503, failed, req/s over the slowest client's wall time, and p50/p99 over all clients' latencies.

    python3 examples/serve/load_test.py --sod target/debug/sod --instances 1,2,3 --clients 2 \
        --connections 32 --requests 1000 --max-seconds 20
Needs only the standard library and a built `sod` with the tools (SOD_TOOLS_DIR, default target/tools).
"""

import argparse
import json
import os
import subprocess
import sys
import time


def start_server(sod, workers, processes):
    args = [sod, "serve", "--bind", "127.0.0.1:0", "--workers", str(workers)]
    if processes:
        args += ["--processes", str(processes)]
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in child.stderr:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("message") == "listening":
            # Drain the log so that the server never blocks on it.
            import threading
            threading.Thread(target=lambda: [None for _ in child.stderr], daemon=True).start()
            return child, event["addr"]
    raise SystemExit("sod serve exited before listening")


def quantile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sod", default="target/debug/sod")
    parser.add_argument("--instances", default="1,2,3")
    parser.add_argument("--workers", type=int, default=2, help="workers per instance")
    parser.add_argument("--processes", type=int, default=0, help="worker processes per instance")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--connections", type=int, default=32, help="connections per client process")
    parser.add_argument("--requests", type=int, default=1000, help="most requests per client process")
    parser.add_argument("--max-seconds", type=float, default=20.0)
    args = parser.parse_args()
    os.environ.setdefault("SOD_TOOLS_DIR", "target/tools")
    print(f"| instances | client processes x connections | requests | ok | 503 | failed | req/s | p50 | p99 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k in [int(x) for x in args.instances.split(",")]:
        servers = [start_server(args.sod, args.workers, args.processes) for _ in range(k)]
        try:
            targets = []
            for _, addr in servers:
                targets += ["--target", addr]
            command = [args.sod, "serve", "bench", *targets, "--json", "--warmup", str(4 * k),
                       "--concurrency", str(args.connections), "--requests", str(args.requests),
                       "--max-seconds", str(args.max_seconds)]
            clients = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(args.clients)]
            reports = []
            for client in clients:
                out, _ = client.communicate()
                if client.returncode != 0:
                    raise SystemExit(f"a client failed: {out}")
                reports.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for child, _ in servers:
                child.terminate()
                child.wait()
        latencies = sorted(l for r in reports for l in r["latencies_ms"])
        sent = sum(r["sent"] for r in reports)
        ok = sum(r["ok"] for r in reports)
        wall = max(r["elapsed_s"] for r in reports)
        print(f"| {k} | {args.clients} x {args.connections} | {sent} | {ok} | {sum(r['overloaded'] for r in reports)} "
              f"| {sum(r['failed'] for r in reports)} | {ok / wall:.1f} | {quantile(latencies, 0.5):.1f} ms "
              f"| {quantile(latencies, 0.99):.1f} ms |")
        sys.stdout.flush()
        time.sleep(1)


if __name__ == "__main__":
    main()
