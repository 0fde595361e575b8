"""Fuzz every kind of input aptune reads through the real command line; count crashes, hangs, lost files.

    python benchmarks/fuzz_inputs.py                      # the full run: 1,000+ cases (see benchmarks/README.md)
    python benchmarks/fuzz_inputs.py --repeats 1 --jobs 2 --kinds video,list --show 5

Inputs (built fresh in a temporary folder with the tiny models): checkpoints in each format aptune reads
(its own .pth and .safetensors, official VideoMAE fine-tune and pre-train files, a Hugging Face VideoMAE
folder, a CLIP image ViT, a training snapshot step_*.pt), an adapter folder, videos in mp4/H.264,
webm/VP9, mkv/H.264 and avi/MPEG-4, list files, classes.txt and a YAML config. Each is mutated with a
fixed seed (bit flips, truncation, garbage prefix/suffix, a zeroed range, empty, a directory in its
place, a wrong extension, a missing file of a folder, other text encodings) and given to the commands
that read it: inspect-checkpoint, check-videos, predict and train (tiny model, one step).

Each case runs `aptune.cli.main(argv)` in a forked child (fast: nothing is imported again) with a
deadline. A crash is an exception that escapes the CLI (it prints one `aptune: error:` line for every
expected error; anything else is a bug) or a traceback anywhere in the output; a hang is a case past its
deadline; a lost file is a file aptune must not touch (every original input, and the checkpoints of an
existing run folder given to a train case that failed) that changed or vanished.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import aptune.cli  # noqa: E402  (imported once here, so forked cases start at once)

BINARY_MUTATIONS = ("bitflip", "truncate", "prefix", "suffix", "zero", "empty", "directory", "wrong_ext")
TEXT_MUTATIONS = BINARY_MUTATIONS + ("utf16_nobom", "latin1")
CRASH_RC = 99


@dataclass
class Case:
    kind: str                      # input kind (checkpoint, adapter, video, list, classes, config)
    target: str                    # which input
    mutation: str
    argv: list[str]
    timeout: float
    run_dir: Path | None = None    # an existing run folder this case must not damage if it fails
    folder: Path = field(default_factory=Path)


# ------------------------------------------------------------------ fixtures
def build_fixtures(base: Path, with_run: bool = True) -> dict:
    """Every original input, written once; `with_run`: also a finished training run (its snapshot and
    adapter, which predict and resume cases need). Runs in a child process (the parent stays free of
    torch threads, so forking cases is safe)."""
    from engine_data import make_video_lists, write_video_config
    from videos import make_video
    lists = make_video_lists(base / "data", n_train=2, n_val=1, n_test=1, num_classes=2)
    (base / "videos").mkdir()
    videos = {ext: make_video(base / "videos" / f"clip.{ext}", num_frames=24) for ext in ("mp4", "webm", "mkv", "avi")}
    config = write_video_config(base / "config.yaml", lists, base / "unused_run",
                                optim={"epochs": 1, "warmup_epochs": 0, "batch_size": 2},
                                data={"test_clips": 1, "test_crops": 1})
    run_dir = base / "run"
    if with_run:
        assert aptune.cli.main(["train", config, "--output", str(run_dir)]) == 0, "the fixture run failed"
    ckpts = write_checkpoints(base / "ckpt", run_dir if with_run else None)
    return {"lists": lists, "videos": {k: str(v) for k, v in videos.items()}, "config": config,
            "run": str(run_dir), "adapter": str(run_dir / "adapter"), "checkpoints": ckpts}


def write_checkpoints(out: Path, run_dir: Path | None) -> dict[str, str]:
    """One file (or folder) per checkpoint format aptune reads, from the tiny models."""
    import torch
    from safetensors.torch import save_file
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    import aptune
    out.mkdir(parents=True)
    model = aptune.create_model("tiny", num_classes=2)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(sd, out / "aptune.pth")
    save_file(sd, str(out / "aptune.safetensors"))
    torch.save({"module": sd}, out / "videomae_finetune.pth")
    enc = {f"encoder.{k}": v for k, v in sd.items() if not k.startswith(("head", "fc_norm"))}
    torch.save({"model": enc, "epoch": 1}, out / "videomae_pretrain.pth")
    c = model.config
    hf = VideoMAEForVideoClassification(VideoMAEConfig(
        image_size=c.img_size, patch_size=c.patch_size, num_frames=c.num_frames, tubelet_size=c.tubelet_size,
        hidden_size=c.embed_dim, num_hidden_layers=c.depth, num_attention_heads=c.num_heads,
        intermediate_size=int(c.embed_dim * c.mlp_ratio), num_labels=2, use_mean_pooling=True))
    hf.save_pretrained(out / "hf_videomae")
    torch.save(aptune.create_model("tiny-clip", num_classes=2).state_dict(), out / "clip_vit.pth")
    if run_dir is not None:
        snap = sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1]
        shutil.copy(snap, out / snap.name)
    return {p.name: str(p) for p in sorted(out.iterdir())}


# ------------------------------------------------------------------ mutations
def mutate(src: Path, dst: Path, how: str, rng: random.Random) -> Path:
    """Write a mutated copy of file `src` at `dst` (or a directory there); returns the path to pass."""
    data = src.read_bytes()
    if how == "directory":
        dst.mkdir(parents=True)
        (dst / "inside.txt").write_text("a folder where a file should be\n")
        return dst
    if how == "wrong_ext":
        dst = dst.with_suffix(rng.choice([".mp4", ".avi", ".pth", ".safetensors", ".csv", ".yaml", ".txt"]))
    elif how == "bitflip":
        buf = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        data = bytes(buf)
    elif how == "truncate":
        data = data[:int(len(data) * rng.uniform(0.0, 0.95))]
    elif how == "prefix":
        data = rng.randbytes(rng.randint(1, 64)) + data
    elif how == "suffix":
        data = data + rng.randbytes(rng.randint(1, 4096))
    elif how == "zero":
        a = rng.randrange(len(data))
        n = rng.randint(1, max(1, len(data) // 10))
        data = data[:a] + bytes(min(n, len(data) - a)) + data[a + n:]
    elif how == "empty":
        data = b""
    elif how == "utf16_nobom":
        data = data.decode("utf-8", "replace").encode("utf-16-le")
    elif how == "latin1":
        data = data.decode("utf-8", "replace").replace("a", "à", 1).encode("latin-1", "replace")
    elif how != "missing":
        raise ValueError(how)
    if how != "missing":
        dst.write_bytes(data)
    return dst


def mutate_in_folder(src: Path, dst: Path, how: str, rng: random.Random) -> tuple[Path, str]:
    """Copy folder `src` to `dst` and mutate (or delete: 'missing') one of its files."""
    shutil.copytree(src, dst)
    files = sorted(p for p in dst.rglob("*") if p.is_file())
    victim = rng.choice(files)
    data = victim.read_bytes()
    victim.unlink()
    tmp = dst.parent / f".orig_{victim.name}"
    tmp.write_bytes(data)
    mutate(tmp, victim, how, rng)
    tmp.unlink()
    return dst, victim.name


# ------------------------------------------------------------------ cases
def make_cases(fx: dict, work: Path, repeats: int, seed: int, kinds: set[str]) -> list[Case]:
    """Every (input, mutation, repeat) with the commands that read that input, mutated copies in
    `work`; the same seed gives the same cases."""
    rng = random.Random(seed)
    cases: list[Case] = []
    video, adapter = fx["videos"]["mp4"], fx["adapter"]
    predict = ["predict", "--clips", "1", "--crops", "1", "--top", "1"]
    train = ["data.num_workers=0", "output.tensorboard=false"]
    for r in range(repeats):
        for name, src in fx["checkpoints"].items():
            if "checkpoint" not in kinds:
                break
            folder = Path(src).is_dir()
            for how in BINARY_MUTATIONS + (("missing",) if folder else ()):
                d = work / f"ckpt-{r}-{name}-{how}"
                d.mkdir(parents=True)
                if folder:
                    path, inner = mutate_in_folder(Path(src), d / name, how, rng)
                    target = f"{name}/{inner}"
                else:
                    path, target = mutate(Path(src), d / name, how, rng), name
                cases.append(Case("checkpoint", target, how, ["inspect-checkpoint", str(path)], 60, folder=d))
                if rng.random() < 0.3:
                    cases.append(Case("checkpoint", target, how, predict + [video, "--adapter", adapter, "--checkpoint",
                                                                              str(path), "--allow-other-backbone"],
                                      120, folder=d))
        if "adapter" in kinds:
            for how in BINARY_MUTATIONS + ("missing",):
                d = work / f"adapter-{r}-{how}"
                d.mkdir(parents=True)
                path, inner = mutate_in_folder(Path(adapter), d / "adapter", how, rng)
                cases.append(Case("adapter", inner, how, ["inspect-checkpoint", str(path)], 60, folder=d))
                cases.append(Case("adapter", inner, how, predict + [video, "--adapter", str(path), "--random-backbone"],
                                  120, folder=d))
        for ext, src in fx["videos"].items():
            if "video" not in kinds:
                break
            for how in BINARY_MUTATIONS:
                d = work / f"video-{r}-{ext}-{how}"
                d.mkdir(parents=True)
                path = mutate(Path(src), d / f"clip.{ext}", how, rng)
                (d / "list.csv").write_text(f"{path.name} 0\n")
                cases.append(Case("video", f"clip.{ext}", how, ["check-videos", str(d / "list.csv"), "--root", str(d),
                                                                "--no-progress"], 60, folder=d))
                cases.append(Case("video", f"clip.{ext}", how, predict + [str(path), "--adapter", adapter,
                                                                          "--random-backbone"], 120, folder=d))
        cases += text_cases(fx, work, r, rng, kinds, train)
    return cases


def text_cases(fx: dict, work: Path, r: int, rng: random.Random, kinds: set[str], train: list[str]) -> list[Case]:
    """List files, classes.txt and the YAML config: check-videos and train (fresh run folders, and a copy
    of the finished fixture run resumed, whose checkpoints a failed case must leave as they were)."""
    cases = []
    lists, config = fx["lists"], fx["config"]
    one_step = ["optim.epochs=1", "optim.batch_size=2"]
    for how in TEXT_MUTATIONS:
        for split in ("train", "val", "test", "classes"):
            kind = "classes" if split == "classes" else "list"
            if kind not in kinds:
                continue
            d = work / f"{kind}-{r}-{split}-{how}"
            shutil.copytree(Path(lists["train"]).parent, d, ignore=shutil.ignore_patterns("videos"))
            name = "classes.txt" if split == "classes" else f"{split}.csv"
            (d / name).unlink()
            path = mutate(Path(lists[split if split != "classes" else "train"]).parent / name, d / name, how, rng)
            listed = d / "train.csv" if split == "classes" else path
            if kind == "list":
                cases.append(Case(kind, name, how, ["check-videos", str(listed), "--root", lists["root"],
                                                    "--num-frames", "4", "--no-progress"], 60, folder=d))
            given = {s: d / f"{s}.csv" for s in ("train", "val", "test")}
            given.update({split: path} if split in given else {})
            overrides = [f"data.{s}_list={p}" for s, p in given.items()]
            resume = rng.random() < 0.3 and Path(fx["run"]).is_dir()
            run = d / "run"
            if resume:
                shutil.copytree(fx["run"], run)
            argv = ["train", config, "--output", str(run)] + (["--resume"] if resume else [])
            cases.append(Case(kind, name, how, argv + overrides + one_step + train, 180,
                              run_dir=run if resume else None, folder=d))
        if "config" in kinds:
            d = work / f"config-{r}-{how}"
            d.mkdir(parents=True)
            path = mutate(Path(config), d / "config.yaml", how, rng)
            cases.append(Case("config", "config.yaml", how, ["train", str(path), "--output", str(d / "run")] + train,
                              180, folder=d))
    return cases


# ------------------------------------------------------------------ running
def digest(paths) -> dict[str, str]:
    """sha256 of every file under `paths` (files or folders)."""
    out = {}
    for root in paths:
        root = Path(root)
        for p in ([root] if root.is_file() else sorted(q for q in root.rglob("*") if q.is_file())):
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _child(argv: list[str], log: Path) -> None:
    """A forked case: its own process group, output to `log`, exit code CRASH_RC when an exception
    escapes the CLI."""
    os.setsid()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = sys.stderr = open(1, "w", closefd=False, buffering=1)
    import torch
    torch.set_num_threads(1)
    try:
        rc = aptune.cli.main(argv)
    except SystemExit as e:                                  # argparse usage errors
        rc = e.code if isinstance(e.code, int) else 2
    except BaseException:                                    # noqa: B036  anything escaping the CLI is a crash
        import traceback
        traceback.print_exc()
        rc = CRASH_RC
    sys.stdout.flush()
    os._exit(rc if isinstance(rc, int) and 0 <= rc < 256 else CRASH_RC)


@dataclass
class Result:
    case: Case
    outcome: str            # ok (exit 0), refused (a one-line error), crash, hang, lost
    rc: int | None
    seconds: float
    log: str


def run_cases(cases: list[Case], jobs: int, protected: dict[str, str]) -> list[Result]:
    """Fork up to `jobs` cases at a time, each with its deadline; classify each as it ends."""
    from aptune.console import progress
    pending, running, results = list(reversed(cases)), {}, []
    bar = progress(total=len(cases), desc="fuzz", unit="case")
    while pending or running:
        while pending and len(running) < jobs:
            case = pending.pop()
            before = digest([case.run_dir / "checkpoints"]) if case.run_dir else {}
            log = case.folder / "aptune.log"
            pid = os.fork()
            if pid == 0:
                _child(case.argv, log)
            running[pid] = (case, time.monotonic(), before, log)
        time.sleep(0.02)
        for pid, (case, start, before, log) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            late = time.monotonic() - start > case.timeout
            if not done and not late:
                continue
            if not done:
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            del running[pid]
            rc = os.waitstatus_to_exitcode(status) if done else None
            results.append(classify(case, rc, time.monotonic() - start, log, before, protected))
            bar.update(1)
    bar.close()
    return results


def classify(case: Case, rc: int | None, seconds: float, log: Path, before: dict, protected: dict) -> Result:
    text = log.read_text(errors="replace") if log.is_file() else ""
    lost = [p for p, h in protected.items() if not os.path.isfile(p) or digest([p]).get(p) != h]
    if case.run_dir and rc != 0:
        after = digest([case.run_dir / "checkpoints"])
        lost += [p for p, h in before.items() if after.get(p) != h]
    if rc is None:
        outcome = "hang"
    elif rc == CRASH_RC or rc < 0 or "Traceback (most recent call last)" in text:
        outcome = "crash"
    elif lost:
        outcome, text = "lost", text + "\nlost: " + ", ".join(lost[:5])
    else:
        outcome = "ok" if rc == 0 else "refused"
    return Result(case, outcome, rc, seconds, text)


def fixtures_in_child(base: Path, with_run: bool) -> dict:
    """build_fixtures in a forked child (torch's threads stay out of the parent); its result as JSON."""
    import json
    out = base / "fixtures.json"
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            out.write_text(json.dumps(build_fixtures(base, with_run)))
        except BaseException:                                    # noqa: B036
            import traceback
            traceback.print_exc()
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("building the fixtures failed (see above)")
    return json.loads(out.read_text())


def report(results: list[Result], show: int) -> None:
    """Per input kind: cases, outcomes; then the first `show` crashes/hangs/lost files with their log."""
    by_kind = defaultdict(Counter)
    for r in results:
        by_kind[r.case.kind][r.outcome] += 1
        by_kind[r.case.kind]["cases"] += 1
    cols = ("cases", "ok", "refused", "crash", "hang", "lost")
    print("\n" + f"{'input kind':12s}" + "".join(f"{c:>9s}" for c in cols))
    total = Counter()
    for kind, c in sorted(by_kind.items()):
        total.update(c)
        print(f"{kind:12s}" + "".join(f"{c[k]:9d}" for k in cols))
    print(f"{'all':12s}" + "".join(f"{total[k]:9d}" for k in cols))
    commands = Counter(r.case.argv[0] for r in results)
    print("commands: " + ", ".join(f"{k} {v}" for k, v in sorted(commands.items())))
    bad = [r for r in results if r.outcome in ("crash", "hang", "lost")]
    for r in bad[:show]:
        tail = "\n    ".join(r.log.strip().splitlines()[-6:])
        print(f"\n{r.outcome}: {r.case.kind} {r.case.target} {r.case.mutation} (rc {r.rc}, {r.seconds:.1f}s)\n"
              f"  aptune {' '.join(r.case.argv)}\n    {tail}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="rounds of every (input, mutation) (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    p.add_argument("--kinds", default="checkpoint,adapter,video,list,classes,config",
                   help="input kinds to fuzz (comma-separated)")
    p.add_argument("--commands", default="inspect-checkpoint,check-videos,predict,train",
                   help="commands to run the mutated inputs through (comma-separated)")
    p.add_argument("--max-cases", type=int, default=0, help="run only this many cases, drawn with the seed")
    p.add_argument("--show", type=int, default=20, help="crashes/hangs/lost files to print in full")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.keep or tempfile.mkdtemp(prefix="aptune-fuzz-"))
    start = time.time()
    try:
        commands = set(args.commands.split(","))
        fx = fixtures_in_child(work / "fixtures", with_run=bool(commands & {"predict", "train"}))
        cases = make_cases(fx, work / "cases", args.repeats, args.seed, set(args.kinds.split(",")))
        cases = [c for c in cases if c.argv[0] in commands]
        if args.max_cases:
            cases = random.Random(args.seed).sample(cases, min(args.max_cases, len(cases)))
        protected = digest([work / "fixtures"])
        print(f"{len(cases)} cases, seed {args.seed}, {args.jobs} at a time")
        results = run_cases(cases, args.jobs, protected)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(results, args.show)
    print(f"\n{time.time() - start:.0f} s")
    return 1 if any(r.outcome in ("crash", "hang", "lost") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
