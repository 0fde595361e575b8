"""aptune serve under load: one server for n tasks against one server process per task.

For each task count n in --tasks it writes n adapters (APT, LoRA, VPT, AdaptFormer, Approximated PT,
linear probing, cycling; random task tensors) on the embedded videomae-demo backbone (8 frames of
48 px) and starts, as `python -m aptune serve` subprocesses on 127.0.0.1:
  shared    one server holding all n tasks; a request asks for every task (?tasks=all n)
  per task  n servers, one task each; a request is n HTTP requests sent at once, one per server,
            and ends when the last one answers
Both sets of servers run side by side; for each concurrency c in --concurrency the two modes take
turns, --rounds times, each turn c client threads sending --requests / --rounds videos (closed loop: a
thread sends its next video when the last one was answered), after c warm-up videos; so the load of
other processes on a shared machine hits both modes alike. Reported per cell: requests/s (one request =
one video answered for all n tasks), clips/s (requests x views x n), p50 / p95 latency, the servers'
resident memory (VmRSS summed over the processes), the servers' CPU time (user + system) per request,
for shared the requests per forward (the batcher's
counters), and shared / per task requests/s as the median of the per-round ratios [min-max]. Every
server runs its model on --server-threads torch threads (default 1: two OpenMP threads on a busy
2-core machine are many times slower). The client threads share the machine with the servers; each
server decodes the video it is sent (per task: n decodes).

    .venv/bin/python benchmarks/bench_serve.py                          # ~10 min on 2 loaded cores
    .venv/bin/python benchmarks/bench_serve.py --tasks 1,4 --concurrency 1,4 --requests 24
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import torch

import aptune
from aptune.data.synthetic import SynthConfig, labeled_clip, write_video

from common import parse_list

ASSET = Path(aptune.__file__).parent / "assets" / "videomae-demo.pth"
METHODS = [("apt", {"num_prompts": 16}), ("lora", {"rank": 8}), ("vpt", {"num_prompts": 8}),
           ("adaptformer", {"bottleneck": 16}), ("approx_prompt", {"num_prompts": 16}), ("linear", {})]


def write_adapters(root: Path, n: int) -> dict[str, Path]:
    out = {}
    for i in range(n):
        method, options = METHODS[i % len(METHODS)]
        torch.manual_seed(i)
        net = aptune.create_model("videomae-demo", num_classes=10, checkpoint=ASSET, method=method, **options)
        with torch.no_grad():
            for name, p in net.named_parameters():
                if p.requires_grad:
                    p.copy_(torch.randn_like(p) * 0.1 + (1.0 if name.endswith("scale") else 0.0))
        out[f"task{i}"] = aptune.save_adapter(net, root / f"task{i}", class_names=[f"c{j}" for j in range(10)])
    return out


class ServerProcess:
    """`python -m aptune serve` on a free port, its URL read from the start-up summary."""

    def __init__(self, adapters: dict[str, Path], args):
        cmd = [sys.executable, "-m", "aptune", "serve", "--checkpoint", str(ASSET), "--port", "0",
               "--log-level", "warning", "--clips", str(args.clips), "--crops", str(args.crops),
               "--batch-window-ms", str(args.window_ms)]
        if args.server_threads:
            cmd += ["--threads", str(args.server_threads)]
        for name, d in adapters.items():
            cmd += ["--adapter", f"{name}={d}"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self.url = next((line.split()[2] for line in self.proc.stdout if line.startswith("listening on ")), None)
        if self.url is None:
            raise SystemExit(f"server did not start: {' '.join(cmd)}")
        self.tasks = list(adapters)

    def cpu_s(self) -> float:
        """CPU time (user + system) the server process used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def health(self) -> dict:
        return json.loads(request(self.url, "GET", "/health")[1])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


_local = threading.local()


def request(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One request on this thread's keep-alive connection to `url` (a new one if the server closed it: uvicorn
    closes connections idle for 5 s)."""
    conns = _local.__dict__.setdefault("conns", {})
    for attempt in range(2):
        if url not in conns:
            u = urlparse(url)
            conns[url] = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
        try:
            conns[url].request(method, path, body=body, headers={"Content-Type": "video/mp4"} if body else {})
            r = conns[url].getresponse()
            return r.status, r.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            conns.pop(url).close()
            if attempt:
                raise
    raise AssertionError("unreachable")


def one_video(servers: list[ServerProcess], video: bytes, fan_out: ThreadPoolExecutor) -> float:
    """Latency (s) of one video answered for every task: one request to the shared server, or one per
    per-task server sent at once."""
    t0 = time.perf_counter()
    calls = [(s.url, "POST", "/predict?tasks=" + ",".join(s.tasks), video) for s in servers]
    results = [request(*calls[0])] if len(calls) == 1 else list(fan_out.map(lambda c: request(*c), calls))
    bad = [status for status, _ in results if status != 200]
    if bad:
        raise SystemExit(f"server answered {bad}")
    return time.perf_counter() - t0


def load(servers: list[ServerProcess], video: bytes, concurrency: int, total: int) -> tuple[list[float], float]:
    """c closed-loop client threads sending `total` videos: (latencies, wall time)."""
    left, lock, latencies = [total], threading.Lock(), []

    def worker():
        with ThreadPoolExecutor(len(servers)) as fan_out:
            while True:
                with lock:
                    if left[0] == 0:
                        break
                    left[0] -= 1
                dt = one_video(servers, video, fan_out)
                with lock:
                    latencies.append(dt)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - t0


def cell(modes: dict[str, list[ServerProcess]], video: bytes, c: int, args) -> list[dict]:
    """Both modes at concurrency c, in alternating rounds (module docstring)."""
    per_round = max(c, args.requests // args.rounds)
    lat, wall, cpu, ratios, start = {m: [] for m in modes}, dict.fromkeys(modes, 0.0), dict.fromkeys(modes, 0.0), \
        [], {}
    for mode, servers in modes.items():
        load(servers, video, c, c)                                          # warm-up
        start[mode] = servers[0].health()
    for _ in range(args.rounds):
        rate = {}
        for mode, servers in modes.items():
            cpu0 = sum(s.cpu_s() for s in servers)
            got, took = load(servers, video, c, per_round)
            cpu[mode] += sum(s.cpu_s() for s in servers) - cpu0
            lat[mode] += got
            wall[mode] += took
            rate[mode] = per_round / took
        ratios.append(rate["shared"] / rate["per_task"])
    rows = []
    for mode, servers in modes.items():
        ms = sorted(1000 * x for x in lat[mode])
        n = len(servers[0].tasks) * len(servers)
        row = {"mode": mode, "tasks": n, "concurrency": c, "processes": len(servers),
               "requests_s": len(ms) / wall[mode], "p50_ms": statistics.median(ms),
               "p95_ms": ms[min(len(ms) - 1, int(0.95 * len(ms)))], "rss_mb": sum(s.rss_mb() for s in servers),
               "cpu_ms": 1000 * cpu[mode] / len(ms)}
        row["clips_s"] = row["requests_s"] * args.clips * args.crops * n
        if mode == "shared":
            end = servers[0].health()
            row["per_forward"] = (end["requests"] - start[mode]["requests"]) / max(1, end["forwards"] -
                                                                                   start[mode]["forwards"])
            row["ratio"], row["ratio_range"] = statistics.median(ratios), [min(ratios), max(ratios)]
        rows.append(row)
        print(f"  tasks {n} c {c:2d} {mode:8s}: {row['requests_s']:6.2f} req/s, p50 {row['p50_ms']:7.1f} ms, "
              f"p95 {row['p95_ms']:7.1f} ms", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| tasks | concurrency | mode | processes | requests/s | clips/s | p50 ms | p95 ms | server CPU ms per "
             "request | RSS MB | requests per forward | shared / per task, req/s [min-max] |", "|" + "---:|" * 12]
    for r in rows:
        ratio = f"{r['ratio']:.2f}x [{r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}]" if "ratio" in r else ""
        per = f"{r['per_forward']:.1f}" if "per_forward" in r else ""
        lines.append(f"| {r['tasks']} | {r['concurrency']} | {r['mode']} | {r['processes']} | {r['requests_s']:.2f} | "
                     f"{r['clips_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['cpu_ms']:.0f} | "
                     f"{r['rss_mb']:.0f} | {per} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="1,4,8", help="task counts")
    p.add_argument("--concurrency", default="1,4,16", help="client threads")
    p.add_argument("--requests", type=int, default=48, help="videos per cell and mode (after the warm-up)")
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds the requests are split into")
    p.add_argument("--clips", type=int, default=1, help="temporal clips per video (the server's --clips)")
    p.add_argument("--crops", type=int, default=1, help="spatial crops per clip")
    p.add_argument("--window-ms", type=float, default=10.0, help="the shared server's --batch-window-ms")
    p.add_argument("--server-threads", type=int, default=1,
                   help="torch threads of each server (aptune serve --threads; 0: torch's default)")
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args()
    args.tasks, args.concurrency = parse_list(args.tasks, int), parse_list(args.concurrency, int)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_video(root / "clip.mp4", labeled_clip(0, "test", 0, SynthConfig(frames=32, size=96))[0])
        video = (root / "clip.mp4").read_bytes()
        for n in args.tasks:
            adapters = write_adapters(root / f"n{n}", n)
            modes = {"shared": [ServerProcess(adapters, args)],
                     "per_task": [ServerProcess({k: v}, args) for k, v in adapters.items()]}
            try:
                for c in args.concurrency:
                    rows += cell(modes, video, c, args)
            finally:
                for servers in modes.values():
                    for server in servers:
                        server.stop()
    load_avg = os.getloadavg()[0]
    print(f"\nvideomae-demo 8x48, {args.clips}x{args.crops} views, {args.requests} requests per cell and mode in "
          f"{args.rounds} rounds, {args.server_threads or 'default'} torch thread(s) per server, {os.cpu_count()} "
          f"cores, load average {load_avg:.2f} at the end\n")
    print(markdown(rows))
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "load_avg": load_avg}, indent=2) + "\n")


if __name__ == "__main__":
    main()
