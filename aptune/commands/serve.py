"""`aptune serve --adapter TASK=DIR [--adapter TASK=DIR ...]`: an HTTP server answering every task of
one backbone (aptune/serve/; needs the `serve` extra: FastAPI and uvicorn).

    curl --data-binary @clip.mp4 -H 'Content-Type: video/mp4' 'http://127.0.0.1:8000/predict?tasks=ucf101&topk=3'
    curl -F video=@clip.mp4 http://127.0.0.1:8000/predict            # every task
    curl http://127.0.0.1:8000/tasks ; curl http://127.0.0.1:8000/health

Requests that arrive within --batch-window-ms of each other share one mixed forward. SIGTERM or
Ctrl-C stops accepting requests, lets those in flight finish, and exits 0.
"""
from __future__ import annotations

import argparse
import signal
from pathlib import Path

import torch

from ..errors import ConfigError
from ..multitask import load_adapters
from ..serve import Server, Settings

HELP = "serve one backbone's tasks over HTTP: POST a video to /predict, get each task's top classes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = Settings()
    p.add_argument("--adapter", required=True, action="append", metavar="TASK=DIR",
                   help="adapter folder saved by `aptune train`, as task name = folder; repeat for more tasks "
                        "(a plain DIR is named after its run folder: runs/ucf101/adapter -> ucf101)")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="backbone weights (default: the file the first adapter records it was trained on)")
    p.add_argument("--allow-other-backbone", action="store_true",
                   help="accept backbone weights whose fingerprint differs from an adapter's record")
    p.add_argument("--device", default="cpu", help="where the model runs (cpu, cuda, cuda:1, ...)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    p.add_argument("--clips", type=int, default=d.clips, help="temporal clips per video")
    p.add_argument("--crops", type=int, default=d.crops, help="spatial crops per clip")
    p.add_argument("--batch-window-ms", type=float, default=d.window_ms,
                   help="how long a request waits for others to share its forward")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="clips (views x tasks) per forward")
    p.add_argument("--max-mb", type=float, default=d.max_bytes / 2 ** 20, help="largest request body in MiB")
    p.add_argument("--decode-threads", type=int, default=d.decode_threads, help="videos decoded at once")
    p.add_argument("--max-in-flight", type=int, default=d.max_in_flight,
                   help="prediction requests served at once; one more is answered 503 with Retry-After: 1")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch threads of the model (default: torch's, one per core; 1 on a busy shared machine)")
    p.add_argument("--graceful-timeout", type=float, default=30.0,
                   help="seconds requests in flight get to finish at shutdown")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (info: one access line per request)")


def run(args: argparse.Namespace) -> int:
    tasks = adapters(args.adapter)
    for name, value in (("--clips", args.clips), ("--crops", args.crops), ("--max-batch", args.max_batch),
                        ("--decode-threads", args.decode_threads), ("--threads", args.threads or 1),
                        ("--max-in-flight", args.max_in_flight)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.max_mb <= 0 or args.batch_window_ms < 0:
        raise ConfigError("--max-mb must be > 0 and --batch-window-ms >= 0")
    settings = Settings(clips=args.clips, crops=args.crops, max_bytes=int(args.max_mb * 2 ** 20),
                        window_ms=args.batch_window_ms, max_batch=args.max_batch, decode_threads=args.decode_threads,
                        max_in_flight=args.max_in_flight)
    mt = load_adapters(tasks, checkpoint=args.checkpoint, allow_other_backbone=args.allow_other_backbone,
                       device=args.device)
    server = Server(mt, settings, host=args.host, port=args.port, log_level=args.log_level,
                    graceful_s=args.graceful_timeout)
    summary(server)
    server.run()
    how = ", ".join(signal.Signals(s).name for s in dict.fromkeys(server.signals)) or "asked to"
    print(f"aptune serve: stopped ({how}) after answering {server.service.batcher.stats['requests']} prediction "
          "request(s)", flush=True)
    return 0


def adapters(values: list[str]) -> dict[str, str]:
    """{task: folder} from TASK=DIR values; a plain DIR is named after its folder, or after the run folder
    for the folders training writes (runs/ucf101/adapter -> ucf101)."""
    out = {}
    for v in values:
        name, sep, directory = v.partition("=")
        if not sep or Path(v).exists():
            p = Path(v).resolve()
            name, directory = (p.parent.name if p.name in ("adapter", "best") else p.name), v
        if not name or not directory:
            raise ConfigError(f"--adapter {v!r}: must be TASK=DIR")
        if name in out:
            raise ConfigError(f"--adapter: task {name!r} given twice ({out[name]} and {directory})")
        out[name] = directory
    return out


def summary(server) -> None:
    """What the server will do, before it starts answering."""
    svc = server.service
    mt, s, c = svc.mt, svc.settings, svc.clip
    device = next(mt.backbone.parameters()).device
    print(f"aptune serve: {len(mt.tasks)} task(s) on one {mt.backbone.family} backbone "
          f"({mt.checkpoint or 'random init'}) on {device}")
    for t in mt.tasks:
        task = mt.task(t)
        print(f"  {t}: {task.method}, {task.num_classes} classes ({task.directory})")
    print(f"  views: {s.clips} clip(s) x {s.crops} crop(s) of {c['num_frames']} frames at {c['img_size']} px, "
          f"{c['sampling']} sampling (stride {c['sampling_rate']})")
    print(f"  batching: up to {s.max_batch} clips per forward, {s.window_ms:g} ms window; bodies up to "
          f"{s.max_bytes / 2 ** 20:g} MiB, {s.max_in_flight} requests at once (then 503); "
          f"{torch.get_num_threads()} torch thread(s), {s.decode_threads} decode thread(s)")
    print(f"listening on {server.url} (POST /predict, GET /tasks, GET /health); SIGTERM or Ctrl-C stops", flush=True)
