"""The GPU check of aptune (issue 18): every CUDA, bf16 and torch.compile path, in ONE process and
ONE call, with its numbers left in files. GPU time is scarce, so the script budgets itself.

On the GPU machine (one call, at most --budget-minutes, default 8; give the call ~9.5 min):

    python benchmarks/gpu_check.py --out benchmarks/results/gpu-check      # or: make gpu-check
    # a lent machine with 15 device minutes in all: 6 minutes, so a failed part can be rerun at once
    APTUNE_COMMIT=<hash> timeout 420 python3 benchmarks/gpu_check.py --out "$OUT/gpu-check" --budget-minutes 6

Rerun only some parts (e.g. after a fix), with a smaller budget:

    python benchmarks/gpu_check.py --out OUT --parts parity,kernels --budget-minutes 2

CPU smoke mode (tiny model, 45 s of CPU time, 1-1.5 min on 2 loaded cores; what tests/test_gpu_check.py runs):

    python benchmarks/gpu_check.py --smoke --out /tmp/gpu-check-smoke

It writes OUT/gpu_check.json (device, torch/CUDA versions, the exact command, start time and, per
part: status ok/failed/skipped, error, seconds, numbers), OUT/gpu_check.md (the tables, also
printed) and OUT/gpu_check.log (the progress lines). Both files are rewritten after every part and
every measured item, so a run killed by a timeout still leaves what it measured.

Parts, in this order; one failing stops nothing (each records its error):
  parity    ViT-B APT-200 16x224 logits (random weights, seed 0): on the device in fp32 (default TF32
            settings, and TF32 off) and in bf16 autocast, each against the CPU fp32 logits; the CPU
            logits also against the plainly written model (benchmarks/plain.py). Max differences and
            top-1 agreement.
  kernels   which fused attention kernel runs (flash / memory-efficient / cudnn / math; on a CPU its
            flash kernel), read from the profiler, without and with APT prompts, for inference fp32,
            inference bf16 and a bf16 training step; and which SDPA backends accept the model's own
            attention inputs (torch.nn.attention.sdpa_kernel, one backend at a time, with the warning
            torch gives when one refuses).
  train     a training step (forward + backward + AdamW, bf16 autocast), clips/s and peak memory, for
            APT-200, VPT-deep-200, AdaptFormer-64, linear probing and full fine-tuning, eager and with
            torch.compile; batch sizes by a doubling search that stops at an out-of-memory error, at
            the cap, or when the next doubling is predicted over 85% of the memory. The plain reference
            model against APT on the same batch (interleaved), and model FLOP utilisation.
  infer     inference clips/s (batch by a doubling search while throughput still grows) and latency at
            batch 1, bf16, for the same methods (linear probing and full fine-tuning infer with the
            base model), eager and compiled (compiled logits compared with eager).
  data      the training dataset (16x4 clips, 224 px, two views per decoded video, as the paper's
            recipe) through a DataLoader with 16 workers on generated UCF101-like files (320x240,
            25 fps, 7 s, H.264), clips/s against the training clips/s above: which is the bottleneck;
            workers decode and crop (uint8), the GPU finishes each batch (the authors' RandAugment,
            float, flip, normalisation), its ms per clip reported.
  torchrun  `torchrun --nproc_per_node 1 -m aptune train` against `python -m aptune train` of the
            same tiny config for 5 steps: the per-step losses in the run folders' metrics.jsonl.

FLOP convention (printed with the tables): aptune.count_flops gives forward multiply-adds per clip
(fvcore's convention); model FLOPs count 2 FLOPs per multiply-add. A training step counts the forward
once plus the backward: full fine-tuning 2 forwards (activation and weight gradients); a frozen
backbone with trainable parameters in every block (APT, VPT, AdaptFormer) 1 forward (activation
gradients through every block, the weight gradients of its few trainable tensors are not counted);
linear probing 0 (the backbone runs without autograd, only the head has a backward). Recomputation
inside fused attention backward is not counted (model FLOPs, not hardware FLOPs). Utilisation is
against the GPU's bf16 dense peak from NVIDIA's datasheets (--peak-tflops overrides it) and against
the bf16 matrix-multiply rate measured at the start of the part.

What it needs on the GPU machine: a CUDA build of torch (torch.version.cuda not None; the CPU wheel
pinned by constraints.txt has no CUDA, so a copied CPU venv cannot run it) and aptune's runtime
dependencies (numpy, av, pyyaml, safetensors, tqdm); aptune itself is imported from this checkout,
installed or not. Nothing is downloaded: the models have random weights and the videos are generated.
Without CUDA (and without --smoke) it writes the JSON with the reason and exits with status 2.
Exit status: 0 when every part ran (status ok), 1 when a part failed or was skipped, 2 no CUDA.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))                      # aptune from this checkout, installed or not

import aptune  # noqa: E402
from aptune.io import atomic_path  # noqa: E402

from bench_train import train_step_fn  # noqa: E402
from common import fix_malloc, interleaved, ratio_stats, stats  # noqa: E402
from plain import plain_from_aptune  # noqa: E402

SCHEMA = "aptune-gpu-check/1"
PARTS = ("parity", "kernels", "train", "infer", "data", "torchrun")
# share of the budget per part, in order; a part gets at least MIN_SHARE of its share when the budget allows
SHARES = {"parity": 0.10, "kernels": 0.05, "train": 0.50, "infer": 0.14, "data": 0.12, "torchrun": 0.09}
MIN_SHARE = 0.4
MEMORY_FRACTION = 0.85     # the batch search stops when the next doubling is predicted over this fraction
# bf16 dense (no sparsity) tensor-core peak in TFLOPS, NVIDIA datasheets (half the with-sparsity figure);
# the first name contained in torch.cuda.get_device_name() wins
BF16_DENSE_TFLOPS = [("H200 NVL", 835.0), ("H200", 989.4), ("GH200", 989.4), ("H100 NVL", 835.0),
                     ("H100 PCIe", 756.0), ("H100", 989.4), ("H800", 989.4), ("A100", 312.0), ("A800", 312.0),
                     ("L40S", 362.0)]


# ---- what to run ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """One model to measure. `backward`: the backward's cost in forwards for the FLOP convention."""
    label: str
    method: str | None
    options: dict
    backward: int
    model_kw: dict = field(default_factory=dict)


@dataclass
class Plan:
    smoke: bool
    model: str
    frames: int
    size: int
    classes: int
    prompts: int
    bottleneck: int
    parity_batch: int
    kernel_batch: int
    train_start: int            # batch search: first batch, cap
    train_cap: int
    infer_start: int
    infer_cap: int
    warmup: int
    repeats: int
    latency_repeats: int
    compile_backend: str
    compile_methods: tuple
    compile_estimate_s: float   # first guess of a training compile's cost (then: the longest one seen)
    videos: int                 # data part: generated files
    video_wh: tuple
    video_seconds: int
    data_frames: int
    data_rate: int
    data_size: int
    data_batch: int
    data_items: int
    workers: int
    train_specs: list
    infer_specs: list


def make_plan(args) -> Plan:
    smoke = args.smoke
    P, b = (8, 8) if smoke else (200, 64)
    train = [Spec(f"apt-{P}", "apt", {"num_prompts": P, "reparam": True, "prompt_dropout": 0.1}, 1),
             Spec(f"vpt-deep-{P}", "vpt", {"num_prompts": P, "deep": True, "prompt_dropout": 0.1}, 1),
             Spec(f"adaptformer-{b}", "adaptformer", {"bottleneck": b, "scale": 0.1, "dropout": 0.1}, 1),
             Spec("linear", "linear", {}, 0),
             Spec("full", "full", {}, 2, {"drop_path_rate": 0.1})]
    infer = train[:3] + [Spec("base (linear, full)", None, {}, 0)]
    if args.methods:
        keep = set(args.methods.split(","))
        train = [s for s in train if s.method in keep]
        infer = [s for s in infer if (s.method or "base") in keep or (s.method is None and keep & {"linear", "full"})]
    compile_methods = () if args.no_compile else (("apt",) if smoke else tuple(s.method for s in train))
    common = dict(smoke=smoke, classes=10 if smoke else 101, prompts=P, bottleneck=b,
                  compile_backend=args.compile_backend or ("eager" if smoke else "inductor"),
                  compile_methods=compile_methods, train_specs=train, infer_specs=infer)
    if smoke:
        return Plan(model="tiny", frames=4, size=32, parity_batch=4, kernel_batch=1, train_start=1, train_cap=4,
                    infer_start=2, infer_cap=8, warmup=1, repeats=3, latency_repeats=3, compile_estimate_s=8.0,
                    videos=2, video_wh=(64, 48), video_seconds=2, data_frames=4, data_rate=4, data_size=32,
                    data_batch=2, data_items=16, workers=args.workers or 2, **common)
    return Plan(model="videomae-vit-b", frames=16, size=224, parity_batch=4, kernel_batch=2, train_start=8,
                train_cap=256, infer_start=8, infer_cap=256, warmup=2, repeats=8, latency_repeats=20,
                compile_estimate_s=60.0, videos=32, video_wh=(320, 240), video_seconds=7, data_frames=16,
                data_rate=4, data_size=224, data_batch=8, data_items=1024, workers=args.workers or 16, **common)


# ---- time budget ---------------------------------------------------------------------------------
class PartTimeout(BaseException):
    """A part ran past its hard limit (a BaseException, so no library's `except Exception` eats it)."""


class Interrupted(BaseException):
    """SIGTERM (e.g. from `timeout`)."""


class Budget:
    """Seconds per part: part i should end by start + total * (shares of parts 0..i), so a part that runs
    long shrinks the ones after it; each part still gets MIN_SHARE of its share as long as that leaves the
    later parts their minimum within the total, and is skipped when it cannot get its own minimum."""

    def __init__(self, total_s: float, parts: list[str], clock=time.monotonic):
        self.total, self.parts, self.clock = total_s, list(parts), clock
        norm = sum(SHARES[p] for p in self.parts)
        self.share = {p: total_s * SHARES[p] / norm for p in self.parts}
        self.t0 = clock()

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def allowance(self, part: str) -> tuple[float | None, str]:
        """(seconds this part may use, or None: skip it; a note when it differs from its share)."""
        i = self.parts.index(part)
        now = self.elapsed()
        planned = sum(self.share[p] for p in self.parts[:i + 1]) - now
        minimum = MIN_SHARE * self.share[part]
        cap = self.total - now - sum(MIN_SHARE * self.share[p] for p in self.parts[i + 1:])
        allow = min(max(planned, minimum), cap)
        if allow < minimum:
            return None, (f"budget: {max(self.total - now, 0):.0f} s of {self.total:.0f} s left, this part needs "
                          f"{minimum:.0f} s and the later ones their minimum")
        note = ""
        if allow < self.share[part] - 1:
            note = f"shrunk to {allow:.0f} s of its {self.share[part]:.0f} s share: earlier parts ran long"
        elif allow > self.share[part] + 1:
            note = f"{allow:.0f} s: its {self.share[part]:.0f} s share plus what earlier parts left"
        return allow, note


@contextlib.contextmanager
def hard_limit(seconds: float):
    """Raise PartTimeout in the main thread after `seconds` (SIGALRM; takes effect between Python
    bytecodes, i.e. after a running kernel or C call returns)."""
    def fire(signum, frame):
        raise PartTimeout(f"stopped at its hard time limit ({seconds:.0f} s)")
    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.1))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---- the run: report, files, log -----------------------------------------------------------------
def finite(x):
    """JSON-safe: non-finite floats become None, tuples lists, tensors numbers."""
    if isinstance(x, dict):
        return {str(k): finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    if isinstance(x, torch.Tensor):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def short_error(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:400] if msg else ''}"


def is_oom(e: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(e, oom) or (isinstance(e, RuntimeError) and "out of memory" in str(e).lower())


class Run:
    """The report being built, its files, the log, the device and the budget."""

    def __init__(self, args, plan: Plan, device: torch.device):
        self.args, self.plan, self.device = args, plan, device
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.logfile = open(self.out / "gpu_check.log", "w")
        self.work = Path(tempfile.mkdtemp(prefix="aptune-gpu-check-"))
        parts = [p for p in PARTS if p in (args.parts.split(",") if args.parts else PARTS)]
        self.budget = Budget(60.0 * args.budget_minutes, parts)
        self.deadline = math.inf
        self.compile_seen: dict[str, list[float]] = {"train": [], "infer": []}
        self.gflops: dict[str, float] = {}
        self.report = {
            "schema": SCHEMA,
            "command": shlex.join([sys.executable] + sys.argv),
            "cwd": os.getcwd(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "finished": None,
            "elapsed_s": 0.0,
            "smoke": plan.smoke,
            "budget_s": self.budget.total,
            "env": environment(device),
            "plan": {"model": plan.model, "clip": f"{plan.frames}x{plan.size}", "classes": plan.classes,
                     "compile_backend": plan.compile_backend, "compile_methods": list(plan.compile_methods),
                     "weights": "random (seed 0), no checkpoint", "autocast": "bf16"},
            "flop_convention": FLOP_CONVENTION,
            "checks": [],
            "parts": {p: {"status": "pending", "error": None, "seconds": 0.0, "share_s": self.budget.share[p],
                          "results": {}} for p in parts},
        }

    # -- output
    def log(self, msg: str) -> None:
        line = f"[{self.budget.elapsed():6.1f}s] {msg}"
        print(line, flush=True)
        self.logfile.write(line + "\n")
        self.logfile.flush()

    def save(self) -> None:
        self.report["elapsed_s"] = self.budget.elapsed()
        self.report["checks"] = checks(self.report)
        with atomic_path(self.out / "gpu_check.json") as tmp:
            tmp.write_text(json.dumps(finite(self.report), indent=2) + "\n")
        with atomic_path(self.out / "gpu_check.md") as tmp:
            tmp.write_text(markdown(self.report))

    # -- time inside a part
    def left(self) -> float:
        return self.deadline - self.budget.elapsed()

    def compile_estimate(self, kind: str) -> float:
        """Seconds a compile (with its first call) of `kind` ("train": forward + backward graphs, "infer":
        forward only, guessed at half a training compile) is expected to take: the longest one seen."""
        if self.compile_seen[kind]:
            return max(self.compile_seen[kind])
        train = max(self.compile_seen["train"]) if self.compile_seen["train"] else self.plan.compile_estimate_s
        return train if kind == "train" else 0.5 * train

    # -- one part
    def run_part(self, name: str, fn) -> None:
        part = self.report["parts"][name]
        allow, note = self.budget.allowance(name)
        part["note"] = note or None
        if allow is None:
            part.update(status="skipped", error=note)
            self.log(f"== {name}: skipped ({note})")
            self.save()
            return
        part["allowed_s"] = allow
        self.deadline = self.budget.elapsed() + allow
        grace = max(10.0, 0.25 * allow)
        self.log(f"== {name}: {allow:.0f} s (hard limit {allow + grace:.0f} s){'; ' + note if note else ''}")
        t0 = time.perf_counter()
        part["status"] = "running"
        try:
            with hard_limit(allow + grace):
                fn(self, part["results"])
            part["status"] = "ok"
        except (Exception, PartTimeout) as e:
            part.update(status="failed", error=short_error(e), traceback=traceback.format_exc()[-3000:])
            self.log(f"   {name} FAILED: {short_error(e)}")
        finally:
            part["seconds"] = time.perf_counter() - t0
            free(self.device)
            self.save()
        self.log(f"== {name}: {part['status']} in {part['seconds']:.1f} s")
        for line in section(name, self.report).splitlines():
            print("   " + line)

    @contextlib.contextmanager
    def item(self, item: dict, what: str):
        """One measured item inside a part: records ok/failed, its error and seconds; saves the files."""
        t0 = time.perf_counter()
        item["status"] = "running"
        self.log(f"   {what} ...")
        try:
            yield
            item["status"] = "ok"
        except Exception as e:
            item.update(status="failed", error=short_error(e))
            self.log(f"   {what}: FAILED {short_error(e)}")
        except BaseException as e:          # the part's hard limit, SIGTERM, Ctrl-C: recorded, then passed on
            item.update(status="failed", error=f"stopped: {short_error(e)}")
            raise
        finally:
            item["seconds"] = time.perf_counter() - t0
            free(self.device)
            self.save()

    def skip(self, item: dict, reason: str, what: str) -> None:
        item.update(status="skipped", reason=reason)
        self.log(f"   {what}: skipped ({reason})")
        self.save()


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def git_commit() -> str | None:
    if os.environ.get("APTUNE_COMMIT"):       # a copied working tree without .git: the caller says
        return os.environ["APTUNE_COMMIT"]
    try:
        r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if r.returncode:
            return None
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return r.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict:
    env = {"device": str(device), "device_name": platform.processor() or platform.machine(),
           "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cuda_available": torch.cuda.is_available(), "aptune": aptune.__version__, "git_commit": git_commit(),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(device_name=torch.cuda.get_device_name(device), capability=f"{p.major}.{p.minor}",
                   memory_gib=p.total_memory / 2**30, multiprocessors=p.multi_processor_count,
                   cudnn=torch.backends.cudnn.version(),
                   tf32_defaults={"cuda_matmul": torch.backends.cuda.matmul.allow_tf32,
                                  "cudnn": torch.backends.cudnn.allow_tf32})
        try:
            r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=15)
            env["driver"] = r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    else:
        try:
            env["device_name"] = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                                      if ln.startswith("model name"))
        except (OSError, StopIteration):
            pass
    return env


# ---- models --------------------------------------------------------------------------------------
def build(run: Run, spec: Spec, seed: int = 0, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The spec's model, random weights from `seed`, created on `device` (on the GPU its init takes
    milliseconds; ViT-B's takes seconds on a CPU)."""
    p = run.plan
    torch.manual_seed(seed)
    with torch.device(device):
        return aptune.create_model(p.model, num_classes=p.classes, num_frames=p.frames, img_size=p.size,
                                   method=spec.method, **spec.model_kw, **spec.options)


def fwd_gflops(run: Run, spec: Spec) -> float:
    """aptune.count_flops of the spec's model (built on the meta device: no weights, instant)."""
    if spec.label not in run.gflops:
        run.gflops[spec.label] = aptune.count_flops(build(run, spec, device="meta"), run.plan.frames, run.plan.size)
    return run.gflops[spec.label]


def clip(run: Run, batch: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, run.plan.frames, run.plan.size, run.plan.size, generator=g)


def autocast(device: torch.device, on: bool = True):
    return torch.autocast(device.type, dtype=torch.bfloat16) if on else contextlib.nullcontext()


@contextlib.contextmanager
def tf32_off():
    """fp32 as IEEE fp32 on CUDA: no TF32 in cuBLAS matmuls nor cuDNN convolutions (restored after)."""
    m, c = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = m, c


def compile_model(run: Run, net: torch.nn.Module) -> torch.nn.Module:
    """A fresh torch.compile of `net` (dynamo reset first: compiles of earlier models must not use up the
    recompile limit, past which dynamo silently runs eager)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    return torch.compile(net, backend=run.plan.compile_backend, dynamic=False)


def graph_breaks() -> dict:
    c = torch._dynamo.utils.counters.get("graph_break", {})
    return {"count": int(sum(c.values())), "reasons": [str(k)[:200] for k in list(c)[:3]]}


class Memory:
    """Peak memory: CUDA max_memory_allocated (absolute, weights and optimizer state included), or on
    the CPU the process's peak resident set (VmHWM, reset through /proc/self/clear_refs)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = ("cuda max_memory_allocated" if device.type == "cuda" else "cpu peak resident set (VmHWM)")

    @staticmethod
    def _kb(field: str, path: str = "/proc/self/status") -> int:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")

    def current(self) -> int:
        return torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else self._kb("VmRSS")

    def peak(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device)
        return self._kb("VmHWM")

    def total(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.get_device_properties(self.device).total_memory
        return self._kb("MemTotal", "/proc/meminfo")


def search_batch(run: Run, trial, start: int, cap: int, max_s: float, keep_growing=None) -> tuple[int, list]:
    """Doubling batch search. `trial(b)` runs a few calls at batch b and returns (seconds per call, peak
    bytes, bytes held before the calls). Stops at `cap`, at an out-of-memory error, when the next
    doubling is predicted over MEMORY_FRACTION of the memory (held + 2 x (peak - held)), when it would run
    past `max_s`, or when keep_growing(previous, current) says so. A first batch that does not fit is
    halved. Returns (chosen batch, the trials)."""
    mem = Memory(run.device)
    trials, best, b, t_start = [], None, start, time.perf_counter()
    while 1 <= b <= cap:
        t0 = time.perf_counter()
        oom = None
        try:
            sec, peak, held = trial(b)
        except Exception as e:
            if not is_oom(e):
                raise
            oom = short_error(e)
        free(run.device)
        if oom:
            trials.append({"batch": b, "ok": False, "error": oom[:160]})
            if best is None:
                b //= 2
                continue
            break
        rec = {"batch": b, "ok": True, "s_per_call": sec, "clips_per_s": b / sec, "peak_mib": peak / 2**20}
        trials.append(rec)
        prev, best = best, b
        if keep_growing is not None and prev is not None and not keep_growing(trials[-2], rec):
            rec["note"] = "throughput no longer grows"
            best = prev
            break
        predicted = held + 2 * (peak - held)
        if predicted > MEMORY_FRACTION * mem.total():
            rec["note"] = f"next doubling predicted at {predicted / 2**30:.1f} GiB, over {MEMORY_FRACTION:.0%}"
            break
        spent = time.perf_counter() - t_start
        if spent + 2.5 * (time.perf_counter() - t0) > max_s:
            rec["note"] = "search stopped: its time"
            break
        b *= 2
    if best is None:
        raise RuntimeError(f"not even batch 1 fits: {trials[-1].get('error') if trials else ''}")
    return best, trials


def time_calls(fn, device, warmup: int, repeats: int, max_s: float) -> list[float]:
    """Seconds of each of `repeats` calls (each synchronised) after `warmup` calls; stops early after max_s
    (at least 2 measured calls)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times, t_start = [], time.perf_counter()
    while len(times) < repeats:
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
        if len(times) >= 2 and time.perf_counter() - t_start > max_s:
            break
    return times


# ---- part 1: parity --------------------------------------------------------------------------------
def diff(a: torch.Tensor, b: torch.Tensor) -> dict:
    a, b = a.float().cpu(), b.float().cpu()
    d = (a - b).abs()
    return {"max_abs": d.max().item(), "max_rel": (d.max() / b.abs().max().clamp(min=1e-12)).item(),
            "top1_agree": int((a.argmax(1) == b.argmax(1)).sum()), "samples": int(a.shape[0]),
            "finite": bool(torch.isfinite(a).all())}


def parity_model(run: Run) -> torch.nn.Module:
    """APT with prompt scales on both sides of 1 and a head whose logits spread (std ~2), in eval mode."""
    spec = Spec(f"apt-{run.plan.prompts}", "apt", {"num_prompts": run.plan.prompts, "prompt_dropout": 0.0}, 1)
    net = build(run, spec).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for blk in net.blocks:
            blk.kv_prompts.scale.copy_(torch.rand(blk.kv_prompts.scale.shape, generator=g) * 1.5 + 0.5)
        net.head.weight.copy_(torch.randn(net.head.weight.shape, generator=g) * 2 / net.embed_dim ** 0.5)
    return net


def part_parity(run: Run, res: dict) -> None:
    dev, p = run.device, run.plan
    res["model"] = f"{p.model} apt-{p.prompts} {p.frames}x{p.size}, batch {p.parity_batch}, eval, random weights"
    net = parity_model(run)
    x = clip(run, p.parity_batch)
    t = time.perf_counter()
    with torch.inference_mode():
        ref = net(x)
        res["cpu_fp32_s"] = time.perf_counter() - t
        plain = plain_from_aptune(net)
        rows = {"cpu plain model fp32 (benchmarks/plain.py)": diff(plain(x), ref)}
        del plain
    margins = ref.topk(2, dim=1).values
    res["ref_logit_absmax"] = ref.abs().max().item()
    res["ref_top1_margin_min"] = (margins[:, 0] - margins[:, 1]).min().item()
    net.to(dev)
    xd = x.to(dev)
    with torch.inference_mode():
        rows[f"{dev.type} fp32, default precision settings"] = diff(net(xd), ref)
        if dev.type == "cuda":
            with tf32_off():
                rows["cuda fp32, TF32 off (cuBLAS and cuDNN)"] = diff(net(xd), ref)
        with autocast(dev):
            rows[f"{dev.type} bf16 autocast"] = diff(net(xd), ref)
    res["against_cpu_fp32"] = rows
    if dev.type == "cpu":
        res["note"] = "no CUDA: the device rows compare the CPU with itself (fp32) and CPU bf16 autocast"


# ---- part 2: attention kernels ---------------------------------------------------------------------
def classify_op(name: str) -> str | None:
    """The SDPA backend an aten op (profiler name) belongs to, or None."""
    n = name.lower()
    if "scaled_dot_product" not in n and "attention" not in n:
        return None
    for key, backend in (("for_cpu", "flash (cpu)"), ("flash_attention", "flash"), ("efficient_attention",
                         "memory-efficient"), ("cudnn_attention", "cudnn"), ("attention_math", "math"),
                         ("overrideable", "overrideable")):
        if key in n:
            return backend
    return None


def profile_attention(fn, device: torch.device) -> dict:
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()                                            # warm-up outside the profile
    sync(device)
    with profile(activities=acts) as prof:
        fn()
        sync(device)
    from torch.autograd import DeviceType
    events = prof.events()
    names = {e.name for e in events}
    fwd = sorted({classify_op(n) for n in names if classify_op(n) and "backward" not in n})
    bwd = sorted({classify_op(n) for n in names if classify_op(n) and "backward" in n})
    explicit = bool({"aten::_softmax", "aten::softmax"} & names)
    if not fwd:
        fwd = ["math (explicit softmax)"] if explicit else ["none found"]
    kernels = sorted({e.name[:120] for e in events if e.device_type == DeviceType.CUDA
                      and any(k in e.name.lower() for k in ("fmha", "flash", "sdpa", "attn", "attention", "cudnn"))})
    return {"forward": ", ".join(fwd), "backward": ", ".join(bwd) or None, "explicit_softmax": explicit,
            "ops": sorted(n for n in names if classify_op(n)), "device_kernels": kernels[:6]}


def probe_backends(attn, h: torch.Tensor, extra, device: torch.device, bf16: bool) -> dict:
    """Which SDPA backends run this attention layer's own inputs, one backend allowed at a time."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    out = {}
    # cuDNN attention is not forced here: a kernel failing inside the GPU would poison the CUDA context for
    # every later part; the profile above still shows it when SDPA picks it on its own
    for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("memory-efficient", SDPBackend.EFFICIENT_ATTENTION),
                     ("math", SDPBackend.MATH)):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            try:
                with sdpa_kernel([be]), torch.inference_mode(), autocast(device, bf16):
                    attn(h, extra() if extra else None)
                sync(device)
                out[name] = {"runs": True}
            except RuntimeError as e:
                why = [" ".join(str(m.message).split())[:240] for m in w]      # torch says why a kernel refused
                out[name] = {"runs": False, "error": short_error(e)[:200], "why": why[:4]}
    return out


def part_kernels(run: Run, res: dict) -> None:
    dev, p = run.device, run.plan
    x = clip(run, p.kernel_batch).to(dev)
    base = build(run, Spec("base", None, {}, 0), device=dev)
    apt = build(run, Spec(f"apt-{p.prompts}", "apt", {"num_prompts": p.prompts, "prompt_dropout": 0.0}, 1), device=dev)
    res["batch"] = p.kernel_batch
    res["tokens"] = base.config.grid(p.frames, p.size)[0] * base.config.grid(p.frames, p.size)[1] ** 2
    res["chosen"], res["backends"] = [], []
    for label, net in (("no prompts (base)", base), (f"APT {p.prompts} prompts", apt)):
        modes = [("inference fp32", False, False), ("inference bf16", True, False), ("train step bf16", True, True)]
        for mode, bf16, train in modes:
            item = {"model": label, "mode": mode}
            res["chosen"].append(item)
            with run.item(item, f"kernel {label}, {mode}"):
                def call(net=net, bf16=bf16, train=train):
                    net.train(train)
                    if train:
                        with autocast(dev, bf16):
                            out = net(x)
                        out.float().sum().backward()
                        net.zero_grad(set_to_none=True)
                    else:
                        with torch.inference_mode(), autocast(dev, bf16):
                            net(x)
                item.update(profile_attention(call, dev))
        attn = net.blocks[0].attn
        h = torch.randn(p.kernel_batch, res["tokens"], net.embed_dim, device=dev)
        extra = (lambda net=net: net.blocks[0].kv_prompts(None)) if net.blocks[0].kv_prompts is not None else None
        for bf16 in (False, True):
            item = {"model": label, "dtype": "bf16" if bf16 else "fp32"}
            res["backends"].append(item)
            with run.item(item, f"backends {label} {item['dtype']}"):
                item["backends"] = probe_backends(attn.eval(), h, extra, dev, bf16)


# ---- part 3: training throughput -------------------------------------------------------------------
FLOP_CONVENTION = ("fwd_gflops: aptune.count_flops, forward multiply-adds per clip (fvcore convention, "
                   "1 multiply-add = 1 FLOP). Model FLOPs per training clip = 2 x fwd multiply-adds x "
                   "(1 + backward), backward = 2 for full fine-tuning (activation + weight gradients), 1 for a "
                   "frozen backbone with trainable parameters in every block (APT, VPT, AdaptFormer: activation "
                   "gradients through every block; their small weight gradients not counted), 0 for linear "
                   "probing (backbone without autograd). Inference: 2 x fwd multiply-adds. Attention "
                   "recomputation in fused backward kernels is not counted. MFU = achieved model FLOP/s / peak.")


def peak_rate(run: Run) -> dict:
    """The GPU's bf16 dense peak (datasheet table or --peak-tflops) and the measured matmul rate."""
    from common import matmul_peak
    dev = run.device
    out = {"tflops": run.args.peak_tflops, "source": "--peak-tflops" if run.args.peak_tflops else None}
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        if out["tflops"] is None:
            hit = next(((k, v) for k, v in BF16_DENSE_TFLOPS if k in name), None)
            if hit:
                out.update(tflops=hit[1], source=f"datasheet bf16 dense for '{hit[0]}' (device '{name}')")
        n, dtype = 8192, torch.bfloat16
    else:
        n, dtype = 512, torch.float32
    rate = matmul_peak(str(dev), n=n, dtype=dtype, repeats=10) * 2 / 1e3     # G multiply-adds/s -> TFLOPS
    out["measured_matmul_tflops"] = rate
    out["measured"] = f"{n}x{n} {str(dtype).removeprefix('torch.')} matmul, best of 10"
    if out["tflops"] is None:
        out["source"] = "no datasheet peak for this device: MFU only against the measured matmul rate"
    return out


def add_rates(rec: dict, gflops: float, passes: int, peak: dict) -> None:
    """Model FLOPs per clip (2 per multiply-add x `passes` forwards' worth), achieved TFLOPS and utilisation
    of `rec` (which has clips_per_s)."""
    per_clip = 2 * gflops * 1e9 * passes
    rec["model_tflop_per_clip"] = per_clip / 1e12
    rec["achieved_tflops"] = rec["clips_per_s"] * per_clip / 1e12
    rec["mfu"] = rec["achieved_tflops"] / peak["tflops"] if peak.get("tflops") else None
    rec["mfu_of_measured_matmul"] = rec["achieved_tflops"] / peak["measured_matmul_tflops"]


def train_trial(run: Run, fwd, b: int):
    """Two training steps at batch b: (seconds of the second, peak bytes, bytes held before)."""
    dev, mem = run.device, Memory(run.device)
    x = torch.randn(b, 3, run.plan.frames, run.plan.size, run.plan.size, device=dev)
    y = torch.randint(0, run.plan.classes, (b,), device=dev)
    step = train_step_fn(fwd, x, y, amp=True)
    held = mem.current()
    mem.reset()
    try:
        step()
        sync(dev)
        t = time.perf_counter()
        step()
        sync(dev)
        return time.perf_counter() - t, mem.peak(), held
    finally:
        for q in fwd.parameters():
            q.grad = None


def measure_train(run: Run, fwd, b: int, rec: dict, max_s: float) -> None:
    """clips/s and peak memory of training steps at batch b into rec."""
    dev, p, mem = run.device, run.plan, Memory(run.device)
    x = torch.randn(b, 3, p.frames, p.size, p.size, device=dev)
    y = torch.randint(0, p.classes, (b,), device=dev)
    step = train_step_fn(fwd, x, y, amp=True)
    held = mem.current()
    mem.reset()
    t = time.perf_counter()
    step()
    sync(dev)
    rec["first_step_s"] = time.perf_counter() - t
    ts = time_calls(step, dev, p.warmup, p.repeats, max_s)
    s = stats(ts)
    peak = mem.peak()
    rec.update(batch=b, step_s=s.median, spread=s.spread, steps=len(ts), clips_per_s=b / s.median,
               peak_mib=peak / 2**20, step_mib=(peak - held) / 2**20)


def part_train(run: Run, res: dict) -> None:
    dev, p = run.device, run.plan
    res["peak"] = peak = peak_rate(run)
    res["memory"] = Memory(dev).kind
    res["items"] = items = []
    res["total_memory_gib"] = Memory(dev).total() / 2**30
    n_eager = len(p.train_specs) + 1
    eager_batch = {}
    for i, spec in enumerate(p.train_specs):                    # 1. eager, every method
        rec = {"label": spec.label, "mode": "eager", "options": {**spec.options, **spec.model_kw}}
        items.append(rec)
        share = run.left() * 0.5 / (n_eager - i)                # half of the part for the eager numbers
        with run.item(rec, f"train {spec.label} eager"):
            net = build(run, spec, device=dev)
            rec["trainable_params"] = aptune.count_parameters(net)["trainable"]
            rec["fwd_gflops"] = fwd_gflops(run, spec)
            b, rec["batch_trials"] = search_batch(run, lambda b, net=net: train_trial(run, net, b),
                                                  p.train_start, p.train_cap, 0.6 * share)
            measure_train(run, net, b, rec, 0.3 * share)
            add_rates(rec, rec["fwd_gflops"], 1 + spec.backward, peak)
            eager_batch[spec.method] = b
            del net
    apt = next((s for s in p.train_specs if s.method == "apt"), None)
    if apt is not None:                                          # 2. plain reference against APT, same batch
        res["plain_vs_apt"] = cmp = {"label": f"plain-{apt.label} vs {apt.label}"}
        with run.item(cmp, "train plain reference vs APT"):
            compare_plain(run, apt, eager_batch.get("apt", p.train_start), cmp, peak)
    for spec in p.train_specs:                                   # 3. compiled, as the budget allows
        if spec.method not in p.compile_methods:
            continue
        rec = {"label": spec.label, "mode": "compile", "backend": p.compile_backend}
        items.append(rec)
        need = 1.3 * run.compile_estimate("train")
        if run.left() < need:
            run.skip(rec, f"budget: {run.left():.0f} s left in the part, a compile and its steps need ~{need:.0f} s",
                     f"train {spec.label} compiled")
            continue
        with run.item(rec, f"train {spec.label} compiled ({p.compile_backend})"):
            net = build(run, spec, device=dev)
            rec["fwd_gflops"] = fwd_gflops(run, spec)
            fwd = compile_model(run, net)
            b = eager_batch.get(spec.method, p.train_start)
            try:
                measure_train(run, fwd, b, rec, 0.15 * run.left())
            except Exception as e:
                if not is_oom(e):
                    raise
                rec["oom_at_eager_batch"] = b
                free(dev)
                measure_train(run, fwd, max(b // 2, 1), rec, 0.15 * run.left())
            rec["compile_s"] = rec["first_step_s"] - rec["step_s"]
            run.compile_seen["train"].append(rec["first_step_s"])
            rec["graph_breaks"] = graph_breaks()
            add_rates(rec, rec["fwd_gflops"], 1 + spec.backward, peak)
            eager = next((r for r in items if r["label"] == spec.label and r["mode"] == "eager"), {})
            if eager.get("clips_per_s"):
                rec["speedup_vs_eager"] = rec["clips_per_s"] / eager["clips_per_s"]
            del net, fwd
    torch._dynamo.reset()


def compare_plain(run: Run, apt: Spec, b: int, cmp: dict, peak: dict) -> None:
    """benchmarks/plain.py's model against aptune's APT, same weights, same batch, rounds interleaved;
    the batch is halved from APT's until the plain model fits."""
    dev, p = run.device, run.plan
    net = build(run, apt, device=dev)
    with torch.device(dev):
        plain = plain_from_aptune(net)
    gflops = fwd_gflops(run, apt)
    trials = []
    while True:
        try:
            train_trial(run, plain, b)
            trials.append({"batch": b, "ok": True})
            break
        except Exception as e:
            if not is_oom(e) or b == 1:
                raise
            trials.append({"batch": b, "ok": False, "error": "out of memory"})
            free(dev)
            b //= 2
    cmp["plain_batch_trials"] = trials
    x = torch.randn(b, 3, p.frames, p.size, p.size, device=dev)
    y = torch.randint(0, p.classes, (b,), device=dev)
    steps = {"aptune": train_step_fn(net, x, y, amp=True), "plain": train_step_fn(plain, x, y, amp=True)}
    per_round = 2 * (train_trial(run, net, b)[0] + 1e-9)
    rounds = int(max(2, min(p.repeats, 0.25 * run.left() / per_round)))
    times = interleaved(steps, rounds, p.warmup, str(dev), desc="aptune vs plain")
    mem = Memory(dev)
    peaks, growth = {}, {}
    for k, fn in steps.items():
        held = mem.current()
        mem.reset()
        fn()
        peaks[k], growth[k] = mem.peak() / 2**20, (mem.peak() - held) / 2**20
    a, q = stats(times["aptune"]), stats(times["plain"])
    r = ratio_stats(times["plain"], times["aptune"])
    cmp.update(batch=b, rounds=rounds, aptune_step_s=a.median, plain_step_s=q.median,
               aptune_clips_per_s=b / a.median, plain_clips_per_s=b / q.median,
               speedup=r.median, speedup_min=r.lo, speedup_max=r.hi,
               aptune_peak_mib=peaks["aptune"], plain_peak_mib=peaks["plain"],
               aptune_step_mib=growth["aptune"], plain_step_mib=growth["plain"])
    tmp = {"clips_per_s": b / a.median}
    add_rates(tmp, gflops, 1 + apt.backward, peak)
    cmp["aptune_mfu"], cmp["aptune_mfu_of_measured_matmul"] = tmp["mfu"], tmp["mfu_of_measured_matmul"]


# ---- part 4: inference ------------------------------------------------------------------------------
def infer_trial(run: Run, fwd, b: int, calls: int = 2):
    dev, mem = run.device, Memory(run.device)
    x = torch.randn(b, 3, run.plan.frames, run.plan.size, run.plan.size, device=dev)
    held = mem.current()
    mem.reset()
    with torch.inference_mode(), autocast(dev):
        fwd(x)
        sync(dev)
        t = time.perf_counter()
        for _ in range(calls):
            fwd(x)
        sync(dev)
    return (time.perf_counter() - t) / calls, mem.peak(), held


def measure_infer(run: Run, fwd, b: int, rec: dict, max_s: float, latency: bool = False) -> None:
    """Throughput at batch b (clips_per_s, peak_mib) or, with latency, the latency of batch b into rec."""
    dev, p = run.device, run.plan
    x = torch.randn(b, 3, p.frames, p.size, p.size, device=dev)
    mem = Memory(dev)
    mem.reset()

    def call():
        with torch.inference_mode(), autocast(dev):
            fwd(x)
    t = time.perf_counter()
    call()
    sync(dev)
    first = time.perf_counter() - t
    s = stats(time_calls(call, dev, p.warmup, p.latency_repeats if latency else p.repeats, max_s))
    if latency:
        rec.update(latency_batch=b, latency_ms=1e3 * s.median, latency_spread=s.spread, latency_first_s=first)
    else:
        rec.update(batch=b, clips_per_s=b / s.median, spread=s.spread, peak_mib=mem.peak() / 2**20,
                   first_call_s=first)


def part_infer(run: Run, res: dict) -> None:
    dev, p = run.device, run.plan
    peak = run.report["parts"].get("train", {}).get("results", {}).get("peak") or peak_rate(run)
    res["items"] = items = []
    grows = lambda a, b: b["clips_per_s"] > 1.05 * a["clips_per_s"]   # noqa: E731
    eager_batch, n = {}, len(p.infer_specs)
    for i, spec in enumerate(p.infer_specs):
        rec = {"label": spec.label, "mode": "eager"}
        items.append(rec)
        share = run.left() * 0.5 / (n - i)
        with run.item(rec, f"infer {spec.label} eager"):
            net = build(run, spec, device=dev).eval()
            rec["fwd_gflops"] = fwd_gflops(run, spec)
            b, rec["batch_trials"] = search_batch(run, lambda b, net=net: infer_trial(run, net, b),
                                                  p.infer_start, p.infer_cap, 0.6 * share, keep_growing=grows)
            measure_infer(run, net, b, rec, 0.2 * share)
            measure_infer(run, net, 1, rec, 0.2 * share, latency=True)
            add_rates(rec, rec["fwd_gflops"], 1, peak)
            eager_batch[spec.method] = b
            del net
    for spec in p.infer_specs:
        if spec.method not in p.compile_methods:
            continue
        rec = {"label": spec.label, "mode": "compile", "backend": p.compile_backend}
        items.append(rec)
        need = 1.2 * run.compile_estimate("infer")
        if run.left() < need:
            run.skip(rec, f"budget: {run.left():.0f} s left in the part, a compile needs ~{need:.0f} s",
                     f"infer {spec.label} compiled")
            continue
        with run.item(rec, f"infer {spec.label} compiled ({p.compile_backend})"):
            net = build(run, spec, device=dev).eval()
            b = eager_batch.get(spec.method, p.infer_start)
            xs = torch.randn(b, 3, p.frames, p.size, p.size, device=dev)
            with torch.inference_mode(), autocast(dev):
                want = net(xs).float()
            fwd = compile_model(run, net)
            t = time.perf_counter()
            with torch.inference_mode(), autocast(dev):
                got = fwd(xs).float()
            sync(dev)
            rec["compile_s"] = time.perf_counter() - t
            run.compile_seen["infer"].append(rec["compile_s"])
            rec["vs_eager"] = diff(got, want)
            rec["graph_breaks"] = graph_breaks()
            measure_infer(run, fwd, b, rec, 0.1 * run.left())
            if run.left() > 1.2 * run.compile_estimate("infer"):   # batch 1 is another shape: another compile
                measure_infer(run, fwd, 1, rec, 0.1 * run.left(), latency=True)
            else:
                rec["latency_note"] = "batch-1 latency not compiled: budget"
            rec["fwd_gflops"] = fwd_gflops(run, spec)
            add_rates(rec, rec["fwd_gflops"], 1, peak)
            del net, fwd
    torch._dynamo.reset()


# ---- part 5: data loading ----------------------------------------------------------------------------
def _make_clip(job):
    from bench_data import make_clip
    path, seconds, w, h, seed = job
    make_clip(Path(path), seconds=seconds, fps=25, w=w, h=h, seed=seed)
    return path


def make_videos(folder: Path, n: int, w: int, h: int, seconds: int, workers: int) -> list[str]:
    """n H.264 mp4 files of moving texture (benchmarks/bench_data.py's make_clip), encoded in parallel."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(folder / f"v{k:03d}.mp4"), seconds, w, h, k) for k in range(n)]
    import multiprocessing as mp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)          # fork of a threaded process: encoders only
        with ProcessPoolExecutor(max_workers=max(1, min(workers, n)), mp_context=mp.get_context("fork")) as ex:
            return list(ex.map(_make_clip, jobs))


def part_data(run: Run, res: dict) -> None:
    from torch.utils.data import DataLoader

    from aptune.data import VideoDataset
    from aptune.data.rand_augment import AUTHORS_POLICY
    p, dev = run.plan, run.device
    w, h = p.video_wh
    t = time.perf_counter()
    paths = make_videos(run.work / "ucf_like", p.videos, w, h, p.video_seconds, p.workers)
    res["videos"] = {"count": len(paths), "size": f"{w}x{h}", "fps": 25, "seconds": p.video_seconds,
                     "codec": "H.264 (libx264 veryfast, crf 23, keyframe every 2 s), moving random block texture",
                     "generate_s": time.perf_counter() - t,
                     "mean_mib": statistics.mean(os.path.getsize(q) for q in paths) / 2**20}
    reps = -(-p.data_items // len(paths))
    entries = [(Path(q).name, k % 10) for k, q in enumerate(paths)] * reps
    # the trainer's loader (issue 26): workers decode and crop in uint8 and draw the augmentation; the
    # device finishes each batch (the authors' RandAugment, float, flip, normalisation) after collation
    ds = VideoDataset(entries[:p.data_items], root=run.work / "ucf_like", mode="train", num_frames=p.data_frames,
                      sampling_rate=p.data_rate, img_size=p.data_size, num_sample=2, threads=1,
                      rand_augment=AUTHORS_POLICY, defer_augment=True)
    loader = DataLoader(ds, batch_size=p.data_batch, num_workers=p.workers, shuffle=False,
                        pin_memory=dev.type == "cuda")
    res["loader"] = {"workers": p.workers, "batch_videos": p.data_batch, "views_per_video": 2,
                     "clip": f"{p.data_frames}x{p.data_rate} at {p.data_size} px", "pin_memory": dev.type == "cuda",
                     "rand_augment": AUTHORS_POLICY, "finished_on": dev.type}
    arrivals, videos, device_s = [], 0, []
    t0 = time.perf_counter()
    limit = 0.8 * run.left()
    for x, _, _, drawn in loader:
        videos += x.shape[0]
        arrivals.append((time.perf_counter() - t0, videos))
        t = time.perf_counter()
        clips = ds.augment_batch(x.to(dev, non_blocking=True), drawn)       # (B, 2, 3, T, S, S) float
        sync(dev)
        device_s.append((time.perf_counter() - t) / clips[:, :, 0, 0, 0, 0].numel())
        if time.perf_counter() - t0 > limit:
            break
    del loader
    # steady state: from the arrival of the first round of batches (one per worker) to the last batch
    k = min(p.workers, len(arrivals) - 2) if len(arrivals) > 2 else 0
    (t_a, v_a), (t_b, v_b) = arrivals[k], arrivals[-1]
    if t_b <= t_a:
        raise RuntimeError(f"too few batches to time ({len(arrivals)})")
    rate = (v_b - v_a) / (t_b - t_a)
    res["loader"].update(batches=len(arrivals), videos_read=videos, seconds=arrivals[-1][0],
                         first_batch_s=arrivals[0][0], timed_from_batch=k + 1,
                         videos_per_s=rate, clips_per_s=2 * rate,
                         device_ms_per_clip=1000 * statistics.median(device_s[k:] or device_s))
    train = run.report["parts"].get("train", {}).get("results", {}).get("items", [])
    res["against_training"] = rows = []
    for r in train:
        if r.get("clips_per_s"):
            ratio = 2 * rate / r["clips_per_s"]
            rows.append({"label": r["label"], "mode": r["mode"], "train_clips_per_s": r["clips_per_s"],
                         "loader_over_train": ratio, "bottleneck": "data loader" if ratio < 1 else "training step"})
    if not rows:
        res["note"] = "no training clips/s to compare with (train part not run or failed)"


# ---- part 6: torchrun ---------------------------------------------------------------------------------
def run_processes(cmds: dict[str, list[str]], env: dict, timeout: float, logs: Path) -> dict[str, dict]:
    """Run the commands at the same time, each in its own process group with its output in logs/NAME.err;
    returns {name: {returncode, seconds, stderr_tail}}. On a timeout (or any interruption) every group is
    killed, so no torchrun worker outlives the check."""
    t0, procs, done, files = time.perf_counter(), {}, {}, []
    try:
        for name, cmd in cmds.items():
            out, err = open(logs / f"{name}.out", "w"), open(logs / f"{name}.err", "w")
            files += [out, err]
            procs[name] = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, start_new_session=True)
        while len(done) < len(procs):
            for name, proc in procs.items():
                if name not in done and proc.poll() is not None:
                    done[name] = {"returncode": proc.returncode, "seconds": time.perf_counter() - t0}
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"{sorted(set(procs) - set(done))} still running after {timeout:.0f} s")
            time.sleep(0.1)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for f in files:
            f.close()
    for name, info in done.items():
        info["stderr_tail"] = (logs / f"{name}.err").read_text()[-2000:] if info["returncode"] else None
    return done


def part_torchrun(run: Run, res: dict) -> None:
    import yaml

    from aptune.engine.logging import read_metrics
    from aptune.engine.state import latest_checkpoint
    dev = run.device
    d = run.work / "torchrun"
    paths = make_videos(d / "videos", 10, 64, 48, 2, min(run.plan.workers, 10))
    (d / "train.csv").write_text("".join(f"{Path(q).name} {k % 2}\n" for k, q in enumerate(paths)))
    cfg = {"model": {"name": "tiny"}, "method": {"name": "apt", "num_prompts": 4, "prompt_dropout": 0.0},
           "data": {"train_list": str(d / "train.csv"), "root": str(d / "videos"), "num_frames": 4,
                    "sampling_rate": 2, "img_size": 32, "num_workers": 0},
           "optim": {"epochs": 1, "warmup_epochs": 0, "batch_size": 2, "lr": 0.5},
           "eval": {"test_at_end": False},
           "output": {"tensorboard": False},
           "runtime": {"device": dev.type, "amp": "auto", "log_every_steps": 1, "seed": 0}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    res["config"] = "tiny APT-4, 4x32 clips, 10 videos, batch 2, 1 epoch = 5 steps, amp auto, device " + dev.type
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT)] + [q for q in [os.environ.get("PYTHONPATH")] if q]),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    py = sys.executable
    cmds = {"plain": [py, "-m", "aptune", "train", str(d / "config.yaml"), f"output.dir={d / 'plain'}"],
            "torchrun": [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                         "-m", "aptune", "train", str(d / "config.yaml"), f"output.dir={d / 'torchrun'}"]}
    losses = {}
    res["runs"] = {name: {"command": shlex.join(cmd)} for name, cmd in cmds.items()}
    for name, info in run_processes(cmds, env, max(10.0, 0.9 * run.left()), d).items():   # both at once
        res["runs"][name].update(info)
    for name, info in res["runs"].items():
        if info["returncode"]:
            last = (info["stderr_tail"] or "").strip().splitlines()[-1:]
            raise RuntimeError(f"{name} run exited with {info['returncode']}: {last}")
        recs = [m for m in read_metrics(d / name) if m["kind"] == "train"]
        losses[name] = [(m["step"], m["loss"]) for m in recs]
        found = latest_checkpoint(d / name / "checkpoints")
        info["world_size"] = found[1].get("world_size") if found else None
    a, b = losses["plain"], losses["torchrun"]
    if [s for s, _ in a] != [s for s, _ in b] or not a:
        raise RuntimeError(f"different steps logged: plain {[s for s, _ in a]}, torchrun {[s for s, _ in b]}")
    res["steps"] = [{"step": s, "plain": la, "torchrun": lb, "abs_diff": abs(la - lb)}
                    for (s, la), (_, lb) in zip(a, b)]
    res["max_abs_diff"] = max(r["abs_diff"] for r in res["steps"])
    res["tolerance"] = 1e-3 if dev.type == "cuda" else 1e-6
    res["note"] = ("with WORLD_SIZE=1 aptune creates no process group (engine/distributed.py init_distributed), so "
                   "this checks torchrun's launch and environment, not NCCL")


# ---- checks, tables -------------------------------------------------------------------------------------
def checks(report: dict) -> list[dict]:
    """The issue's must-hold points, from what the parts recorded (ok None: not measured)."""
    parts = report["parts"]
    res = {k: v.get("results", {}) for k, v in parts.items()}
    dev = report["env"]["device"].split(":")[0]
    out = []

    def add(name, ok, value, limit, note=None):
        out.append({"check": name, "ok": ok, "value": value, "limit": limit, "note": note})
    rows = res.get("parity", {}).get("against_cpu_fp32", {})
    fp32 = rows.get(f"{dev} fp32, default precision settings")
    add(f"{dev} fp32 logits match the CPU (max abs diff)", None if fp32 is None else fp32["max_abs"] <= 1e-3,
        fp32 and fp32["max_abs"], "<= 1e-3", "same device: run-to-run" if dev == "cpu" else None)
    ieee = rows.get("cuda fp32, TF32 off (cuBLAS and cuDNN)")
    if ieee is not None:
        add("cuda fp32 with TF32 off matches the CPU (max abs diff)", ieee["max_abs"] <= 1e-3, ieee["max_abs"],
            "<= 1e-3")
    bf = rows.get(f"{dev} bf16 autocast")
    add(f"{dev} bf16 top-1 agrees with CPU fp32", None if bf is None else bf["top1_agree"] == bf["samples"],
        bf and f"{bf['top1_agree']}/{bf['samples']}", "all")
    pl = rows.get("cpu plain model fp32 (benchmarks/plain.py)")
    add("aptune matches the plain model on the CPU (max abs diff)", None if pl is None else pl["max_abs"] <= 1e-3,
        pl and pl["max_abs"], "<= 1e-3")
    chosen = [c for c in res.get("kernels", {}).get("chosen", []) if c.get("forward")]
    if chosen:
        slow = [f"{c['model']}, {c['mode']}: {c['forward']}" for c in chosen if "math" in c["forward"]
                or "none" in c["forward"] or "math" in (c.get("backward") or "")]
        add("fused attention kernel (not math), with and without prompts", not slow,
            "; ".join(slow) or ", ".join(sorted({c["forward"] for c in chosen})), "no math")
    cmp = res.get("train", {}).get("plain_vs_apt", {})
    sp = cmp.get("speedup")
    add("APT training faster than the plain reference (plain s/step / aptune s/step)",
        None if sp is None else sp > 1, sp, "> 1", cmp.get("batch") and f"batch {cmp['batch']}")
    mfu = [r for r in res.get("train", {}).get("items", [])
           if r["label"].startswith("apt") and r.get("mfu_of_measured_matmul")]
    add("APT training model FLOP utilisation reported", bool(mfu) if "train" in parts else None,
        ", ".join(f"{r['mode']} {fmt(r.get('mfu'), pct=True)} of peak, {fmt(r['mfu_of_measured_matmul'], pct=True)}"
                  " of measured matmul" for r in mfu) or None, "reported")
    tr = res.get("torchrun", {})
    add("torchrun (1 process) gives the same per-step losses", None if "max_abs_diff" not in tr
        else tr["max_abs_diff"] <= tr["tolerance"], tr.get("max_abs_diff"), tr.get("tolerance"))
    data = res.get("data", {}).get("against_training", [])
    apt_rows = [r for r in data if r["label"].startswith("apt")]
    if apt_rows:
        best = max(apt_rows, key=lambda r: r["train_clips_per_s"])
        add("data loader vs APT training (loader clips/s / train clips/s)", None, best["loader_over_train"], None,
            f"bottleneck: {best['bottleneck']} ({best['mode']})")
    return out


def fmt(v, digits: int = 3, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        if pct:
            return f"{100 * v:.1f}%"
        if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e5):
            return f"{v:.2e}"
        return f"{v:.{digits}g}" if abs(v) < 10 ** digits else f"{v:.0f}"
    return str(v)


def status_text(item: dict) -> str:
    st = item.get("status", "-")
    why = item.get("reason") or item.get("error")
    return f"{st}: {why}" if why and st != "ok" else st


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]
    return "\n".join(lines)


def section(name: str, report: dict) -> str:
    part = report["parts"].get(name)
    if part is None:
        return ""
    r = part.get("results", {})
    head = f"## {name}: {part['status']}, {part['seconds']:.1f} s"
    if part.get("error"):
        head += f"\n\nerror: `{part['error']}`"
    if part.get("note"):
        head += f"\n\nbudget: {part['note']}"
    body = []
    if name == "parity" and r.get("against_cpu_fp32"):
        body.append(f"{r.get('model')}; reference CPU fp32 logits, max |logit| {fmt(r.get('ref_logit_absmax'))}, "
                    f"smallest top-1 margin {fmt(r.get('ref_top1_margin_min'))}")
        body.append(md_table(["against CPU fp32", "max abs diff", "max rel diff", "top-1 agree", "finite"],
                             [[k, v["max_abs"], v["max_rel"], f"{v['top1_agree']}/{v['samples']}", v["finite"]]
                              for k, v in r["against_cpu_fp32"].items()]))
    if name == "kernels" and r.get("chosen"):
        body.append(md_table(["model", "mode", "forward kernel", "backward kernel", "device kernels", "status"],
                             [[c["model"], c["mode"], c.get("forward", "-"), c.get("backward") or "-",
                               ", ".join(c.get("device_kernels", [])) or "-", c.get("status", "-")]
                              for c in r["chosen"]]))
        rows = []
        for b in r.get("backends", []):
            for be, v in b.get("backends", {}).items():
                rows.append([b["model"], b["dtype"], be, v["runs"], "; ".join(v.get("why", []))[:160]
                             or (v.get("error") or "")[:160]])
        if rows:
            body.append("SDPA backends that accept block 0's attention inputs (one allowed at a time):\n\n"
                        + md_table(["model", "dtype", "backend", "runs", "why not"], rows))
    if name == "train" and r.get("items"):
        pk = r.get("peak", {})
        body.append(f"bf16 peak: {fmt(pk.get('tflops'))} TFLOPS ({pk.get('source')}); measured "
                    f"{fmt(pk.get('measured_matmul_tflops'))} TFLOPS ({pk.get('measured')}); memory: {r.get('memory')}")
        body.append(md_table(["method", "mode", "batch", "clips/s", "s/step", "spread", "peak MiB", "step MiB",
                              "trainable", "fwd GFLOPs", "TFLOPS", "MFU", "MFU of matmul", "compile s", "status"],
                             [[i["label"], i["mode"], i.get("batch"), i.get("clips_per_s"), i.get("step_s"),
                               i.get("spread"), i.get("peak_mib"), i.get("step_mib"), i.get("trainable_params"),
                               i.get("fwd_gflops"),
                               i.get("achieved_tflops"), fmt(i.get("mfu"), pct=True),
                               fmt(i.get("mfu_of_measured_matmul"), pct=True), i.get("compile_s"),
                               status_text(i)]
                              for i in r["items"]]))
        c = r.get("plain_vs_apt")
        if c and c.get("speedup") is not None:
            body.append(f"aptune APT vs plain reference at batch {c['batch']} ({c['rounds']} interleaved rounds): "
                        f"{fmt(c['aptune_step_s'])} vs {fmt(c['plain_step_s'])} s/step, plain/aptune = "
                        f"**{fmt(c['speedup'])}** [{fmt(c['speedup_min'])}-{fmt(c['speedup_max'])}], peak "
                        f"{fmt(c['aptune_peak_mib'])} vs {fmt(c['plain_peak_mib'])} MiB (the step's own: "
                        f"{fmt(c['aptune_step_mib'])} vs {fmt(c['plain_step_mib'])} MiB)")
        elif c and c.get("status") != "ok":
            body.append(f"plain reference vs APT: {c.get('status')}: {c.get('error')}")
    if name == "infer" and r.get("items"):
        body.append(md_table(["method", "mode", "batch", "clips/s", "peak MiB", "latency b1 ms", "TFLOPS", "MFU",
                              "compile s", "vs eager max abs", "status"],
                             [[i["label"], i["mode"], i.get("batch"), i.get("clips_per_s"), i.get("peak_mib"),
                               i.get("latency_ms"), i.get("achieved_tflops"), fmt(i.get("mfu"), pct=True),
                               i.get("compile_s"), (i.get("vs_eager") or {}).get("max_abs"),
                               status_text(i)]
                              for i in r["items"]]))
    if name == "data" and r.get("loader", {}).get("clips_per_s"):
        v, ld = r["videos"], r["loader"]
        body.append(f"{v['count']} videos {v['size']} {v['fps']} fps {v['seconds']} s ({v['codec']}; mean "
                    f"{fmt(v['mean_mib'])} MiB); {ld['workers']} workers, {ld['clip']}, {ld['views_per_video']} "
                    f"views per decoded video: **{fmt(ld['clips_per_s'])} clips/s** ({fmt(ld['videos_per_s'])} "
                    f"videos/s over {ld['batches']} batches, timed from batch {ld['timed_from_batch']}); RandAugment "
                    f"{ld.get('rand_augment')}, float and normalisation on the {ld.get('finished_on')}: "
                    f"{fmt(ld.get('device_ms_per_clip'))} ms per clip there")
        if r.get("against_training"):
            body.append(md_table(["method", "mode", "train clips/s", "loader / train", "bottleneck"],
                                 [[a["label"], a["mode"], a["train_clips_per_s"], a["loader_over_train"],
                                   a["bottleneck"]] for a in r["against_training"]]))
    if name == "torchrun" and r.get("steps"):
        body.append(md_table(["step", "python -m aptune", "torchrun 1 process", "abs diff"],
                             [[s["step"], s["plain"], s["torchrun"], s["abs_diff"]] for s in r["steps"]]))
        body.append(f"world size recorded: plain {r['runs']['plain'].get('world_size')}, torchrun "
                    f"{r['runs']['torchrun'].get('world_size')}; {r.get('note')}")
    if r.get("note") and name != "torchrun":
        body.append(f"note: {r['note']}")
    return "\n\n".join([head] + body) + "\n"


def markdown(report: dict) -> str:
    env = report["env"]
    out = ["# aptune GPU check", ""]
    if report["smoke"] or env["device"] == "cpu":
        out += ["**CPU smoke run (no GPU): these numbers only show that the script works; they are not GPU "
                "numbers.**", ""]
    out += [f"- device: {env['device']} {env.get('device_name')}"
            + (f", {fmt(env.get('memory_gib'))} GiB, capability {env.get('capability')}, driver {env.get('driver')}"
               if env["device"].startswith("cuda") else ""),
            f"- torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env.get('cudnn')}, Python {env['python']}, "
            f"aptune {env['aptune']} ({env.get('git_commit')})",
            f"- command: `{report['command']}`",
            f"- started {report['started']}, {report['elapsed_s']:.0f} s of a {report['budget_s']:.0f} s budget"
            + (f", finished {report['finished']}" if report.get("finished") else " (running or cut short)"),
            f"- model {report['plan']['model']} {report['plan']['clip']}, {report['plan']['weights']}, "
            f"compile backend {report['plan']['compile_backend']}", ""]
    out += ["## checks", "", md_table(["check", "ok", "value", "limit", "note"],
                                      [[c["check"], fmt(c["ok"]), c["value"], c["limit"], c["note"] or ""]
                                       for c in report["checks"]]), ""]
    out += ["## parts", "", md_table(["part", "status", "seconds", "share s", "note / error"],
                                     [[k, v["status"], v["seconds"], v["share_s"],
                                       v.get("error") or v.get("note") or ""] for k, v in report["parts"].items()]), ""]
    out += [section(k, report) for k in report["parts"]]
    out += ["## FLOP convention", "", report["flop_convention"], ""]
    return "\n".join(out)


# ---- main -------------------------------------------------------------------------------------------------
PART_FUNCS = {"parity": part_parity, "kernels": part_kernels, "train": part_train, "infer": part_infer,
              "data": part_data, "torchrun": part_torchrun}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder for gpu_check.json, gpu_check.md, gpu_check.log")
    p.add_argument("--smoke", action="store_true", help="tiny model, fixed tiny batches, CPU unless --device says")
    p.add_argument("--device", default=None, help="cuda (default), cuda:N or cpu (default with --smoke)")
    p.add_argument("--budget-minutes", type=float, default=8.0, help="whole run, shared by the parts (default 8)")
    p.add_argument("--parts", default=None, help=f"comma list of parts to run, in the fixed order (default all: "
                   f"{','.join(PARTS)})")
    p.add_argument("--methods", default=None, help="comma list among apt,vpt,adaptformer,linear,full (default all)")
    p.add_argument("--no-compile", action="store_true", help="skip every torch.compile item")
    p.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; eager in --smoke)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's bf16 dense peak, if not in the table")
    p.add_argument("--workers", type=int, default=None, help="data loader workers (default 16; 2 in --smoke)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; 1 in --smoke)")
    args = p.parse_args(argv)
    if args.parts:
        bad = set(args.parts.split(",")) - set(PARTS)
        if bad:
            p.error(f"unknown parts {sorted(bad)}; known: {', '.join(PARTS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads or args.smoke:
        torch.set_num_threads(args.threads or 1)      # 1 in --smoke: 2 OpenMP threads on 2 loaded cores crawl
    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    plan = make_plan(args)
    if device.type == "cuda" and not torch.cuda.is_available():
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        why = (f"CUDA not available: torch {torch.__version__} (CUDA build: {torch.version.cuda}); "
               "this check needs a CUDA build of torch and a GPU (or --smoke for the CPU)")
        (out / "gpu_check.json").write_text(json.dumps({"schema": SCHEMA, "error": why,
                                                        "command": shlex.join([sys.executable] + sys.argv),
                                                        "env": environment(torch.device("cpu"))}, indent=2) + "\n")
        print(f"gpu_check: {why}", file=sys.stderr)
        return 2
    if device.type == "cuda":
        if device.index is None:              # set_device and friends need an index: "cuda" -> "cuda:0"
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    else:
        fix_malloc()
    run = Run(args, plan, device)

    def on_term(signum, frame):
        raise Interrupted(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    env = run.report["env"]
    run.log(f"aptune GPU check: {env['device']} {env['device_name']}, torch {env['torch']} CUDA {env['cuda']}, "
            f"budget {run.budget.total:.0f} s, out {run.out}")
    try:
        for name in run.report["parts"]:
            run.run_part(name, PART_FUNCS[name])
    except (Interrupted, KeyboardInterrupt) as e:
        for part in run.report["parts"].values():
            if part["status"] in ("pending", "running"):
                part.update(status="failed" if part.get("allowed_s") else "skipped", error=f"interrupted: {e}")
        run.log(f"interrupted: {e}")
    finally:
        run.report["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        run.save()
        import shutil
        shutil.rmtree(run.work, ignore_errors=True)
    md = markdown(run.report)
    print("\n" + md)
    run.log(f"wrote {run.out / 'gpu_check.json'} and {run.out / 'gpu_check.md'}")
    return 0 if all(p["status"] == "ok" for p in run.report["parts"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
