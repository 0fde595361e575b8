"""What a real user's run meets (issue 24, the run side): a video that fails mid-run, predict over a
folder with a bad file, a resume after the class list changed, the start-up summary, and the smaller
findings. Tiny model, tiny real video files."""
import json
from pathlib import Path

import pytest
import torch

from aptune.cli import main
from aptune.engine.state import latest_checkpoint, list_checkpoints
from aptune.engine.train import EpochSampler

from engine_data import make_video_lists, write_video_config


def truncate(path: Path) -> None:
    """Keep the first half of an mp4 written without faststart: its index (moov) is gone, so the file
    is there and not empty (the up-front check passes) but cannot be decoded."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def reason(path) -> str:
    """Why the decoder refuses `path` (its BadVideoError's reason)."""
    from aptune.data.decode import BadVideoError, probe
    with pytest.raises(BadVideoError) as e:
        probe(path)
    return e.value.reason


def records(run: Path, kind: str) -> list[dict]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r for r in recs if r["kind"] == kind]


def weights(run: Path) -> dict:
    return latest_checkpoint(run / "checkpoints")[1]["model"]


# ---- 3. a video that fails to decode mid-run ------------------------------------------------------------
@pytest.fixture
def bad_middle(tmp_path):
    """12 training videos, batch 4: the one that epoch 0 reaches in its second step is cut short; a bad
    val and a bad test video too. Returns (lists, line of the bad training video (1-based), config)."""
    lists = make_video_lists(tmp_path / "data", n_train=12, n_val=3, n_test=3)
    index = EpochSampler(12, 4, 0, 1, seed=0).indices()[5]      # step 2 of epoch 1
    lines = Path(lists["train"]).read_text().splitlines()
    for split, i in (("train", index), ("val", 1), ("test", 2)):
        name = Path(lists[split]).read_text().splitlines()[i].split()[0]
        truncate(Path(lists["root"]) / name)
    cfg = write_video_config(tmp_path / "c.yaml", lists, tmp_path / "run", optim={"epochs": 2, "batch_size": 4},
                             data={"num_workers": 1}, method={"name": "apt", "num_prompts": 4})
    return lists, index + 1, cfg, lines[index].split()[0]


def test_bad_video_mid_run_is_skipped_named_once_counted_and_listed(tmp_path, bad_middle, capsys):
    lists, line, cfg, name = bad_middle
    capsys.readouterr()
    assert main(["train", cfg]) == 0                  # the default skips (1 of 12 is under max_bad_fraction)
    err = capsys.readouterr().err
    where = f"{lists['train']}:{line}: "
    named = [x for x in err.splitlines() if where in x]
    assert len(named) == 1, err                       # once, through the loader worker, over 2 epochs
    assert named[0].startswith("aptune: warning: bad video ") and name in named[0]
    assert reason(Path(lists["root"]) / name) in named[0] and "data.skip_bad_videos" in named[0]
    assert len([x for x in err.splitlines() if f"{lists['val']}:2: " in x]) == 1        # val: 2 epochs, once
    run = tmp_path / "run"
    assert [r["skipped_videos"] for r in records(run, "epoch")] == [1, 1]
    assert [r["val_skipped"] for r in records(run, "epoch")] == [1, 1]
    assert records(run, "test")[0]["skipped_videos"] == 1
    listed = (run / "bad_videos.txt").read_text().splitlines()
    assert sorted(x.split("\t")[0] for x in listed[1:]) == sorted(
        [f"{lists['train']}:{line}", f"{lists['val']}:2", f"{lists['test']}:3"])
    report = json.loads((run / "eval" / "metrics.json").read_text())
    assert report["num_videos"] == 2 and report["skipped_videos"] == 1
    assert report["bad_videos"][0]["where"] == f"{lists['test']}:3"
    # aptune eval: the same report, the video named once, the count said
    assert main(["eval", cfg, "--adapter", str(run / "adapter"), "--random-backbone", "--out",
                 str(tmp_path / "ev")]) == 0
    out = capsys.readouterr()
    assert len([x for x in out.err.splitlines() if f"bad video {lists['test']}:3: " in x]) == 1
    assert "left out 1 of 3 videos that could not be decoded" in out.out and "1 left out" in out.out
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["bad_videos"] == report["bad_videos"]


def test_strict_stop_saves_the_last_step_and_the_resume_matches_a_skipping_run(tmp_path, bad_middle, capsys):
    lists, line, cfg, name = bad_middle
    assert main(["train", cfg, f"output.dir={tmp_path / 'ref'}"]) == 0       # skipping from the start
    capsys.readouterr()
    assert main(["train", cfg, "data.skip_bad_videos=false"]) == 2
    err = capsys.readouterr().err
    run = tmp_path / "run"
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_00000001.pt"]   # step 1 kept
    msg = err.strip().splitlines()[-1]
    assert msg.startswith("aptune: error: bad video ") and f"{lists['train']}:{line}: " in msg
    assert reason(Path(lists["root"]) / name) in msg
    assert "data.skip_bad_videos" in msg and "aptune check-videos" in msg
    assert "step_00000001.pt" in msg and f"aptune train {run / 'config.yaml'} --resume" in msg
    assert main(["train", str(run / "config.yaml"), "--resume", "data.skip_bad_videos=true"]) == 0
    a, b = weights(tmp_path / "ref"), weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    loss = [r["loss"] for r in records(run, "train")]
    assert loss == [r["loss"] for r in records(tmp_path / "ref", "train")]
    assert [r["skipped_videos"] for r in records(run, "epoch")] == [1, 1]


def test_a_wrong_data_root_fails_at_once_and_writes_nothing(tmp_path, capsys, monkeypatch):
    lists = make_video_lists(tmp_path / "data", n_train=4, n_val=0, n_test=0)
    monkeypatch.chdir(tmp_path)
    cfg = write_video_config(tmp_path / "c.yaml", lists, tmp_path / "run", data={"val_list": None,
                                                                                 "test_list": None})
    capsys.readouterr()
    assert main(["train", cfg, "data.root=data/vids"]) == 2
    err = capsys.readouterr().err
    assert "4 of the 4 videos of data.train_list are missing" in err
    assert f"'data/vids' (relative to the working directory {tmp_path})" in err
    assert not (tmp_path / "run").exists()


# ---- 4. predict over a folder with a bad file between good ones -------------------------------------------
@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """An APT adapter over a tiny backbone file, with class names (no training: its head is as built)."""
    from safetensors.torch import save_file

    import aptune
    tmp = tmp_path_factory.mktemp("adapter")
    torch.manual_seed(0)
    save_file(aptune.create_model("tiny").state_dict(), str(tmp / "backbone.safetensors"))
    model = aptune.create_model("tiny", num_classes=3, method="apt", num_prompts=4,
                                checkpoint=tmp / "backbone.safetensors")
    aptune.save_adapter(model, tmp / "named", class_names=["jump", "run", "swim"])
    aptune.save_adapter(model, tmp / "unnamed")
    return tmp


def test_predict_answers_every_good_video_and_names_each_bad_one(adapter, tmp_path, capsys):
    from videos import make_video
    (tmp_path / "clips").mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        make_video(tmp_path / "clips" / name, num_frames=20)
    truncate(tmp_path / "clips" / "b.mp4")
    args = ["--adapter", str(adapter / "named"), "--checkpoint", str(adapter / "backbone.safetensors")]
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "clips"), *args]) == 1
    out = capsys.readouterr()
    lines = out.out.splitlines()          # a.mp4 and its 3 classes, one line for b.mp4, c.mp4 and its 3
    assert len(lines) == 9 and lines[0].endswith("a.mp4") and lines[5].endswith("c.mp4")
    assert all("%" in x for x in lines[1:4] + lines[6:9])
    assert f"b.mp4: could not be decoded: {reason(tmp_path / 'clips' / 'b.mp4')}" in lines[4]
    assert "1 of 3 videos could not be decoded" in out.err
    # --json: the error in its place; the good answers are the ones each video gets alone
    assert main(["predict", str(tmp_path / "clips" / "a.mp4"), str(tmp_path / "clips" / "b.mp4"),
                 str(tmp_path / "clips" / "c.mp4"), *args, "--json"]) == 1
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [sorted(r) for r in rows] == [["top", "video"], ["error", "video"], ["top", "video"]]
    assert rows[1]["error"] == reason(tmp_path / "clips" / "b.mp4")
    assert main(["predict", str(tmp_path / "clips" / "c.mp4"), *args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == rows[2]


def test_predict_help_documents_the_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "1 when some could not be decoded" in text


# ---- 5. resume after the class list changed -----------------------------------------------------------------
def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_after_a_class_was_added_is_refused_before_anything_is_written(tmp_path, capsys):
    from videos import make_video
    lists = make_video_lists(tmp_path / "data", n_train=4, n_val=0, n_test=0)
    cfg = write_video_config(tmp_path / "c.yaml", lists, tmp_path / "run", optim={"epochs": 1, "batch_size": 2},
                             data={"val_list": None, "test_list": None})
    assert main(["train", cfg]) == 0
    before = snapshot(tmp_path / "run")
    make_video(Path(lists["root"]) / "new.mp4", num_frames=24)        # prepare re-run with a new class folder
    with open(lists["train"], "a") as f:
        f.write("new.mp4 2\n")
    with open(tmp_path / "data" / "classes.txt", "a") as f:
        f.write("class_2\n")
    capsys.readouterr()
    assert main(["train", cfg, "--resume", "optim.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "trained on 2 classes (class_0, class_1)" in err and "now has 3 classes" in err and "new: class_2" in err
    assert snapshot(tmp_path / "run") == before                      # config.yaml byte-identical, nothing else
    # same count, other names (a class renamed): refused too
    (tmp_path / "data" / "classes.txt").write_text("class_0\nclass_x\n")
    Path(lists["train"]).write_text("".join(Path(lists["train"]).read_text().splitlines(True)[:-1]))
    assert main(["train", cfg, "--resume", "optim.epochs=2"]) == 2
    assert "new: class_x; gone: class_1" in capsys.readouterr().err
    assert snapshot(tmp_path / "run") == before


# ---- 6. the start-up summary, a far-off clip, a random backbone, a user without a checkpoint ------------
def run_main(*args) -> tuple[int, str, str]:
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """A tiny run at 80 px (200 tokens per clip, the tiny model's own 4x32x32 clip has 32) on lists without
    classes.txt, 2 classes, 2 epochs of 3 steps."""
    tmp = tmp_path_factory.mktemp("summary")
    lists = make_video_lists(tmp / "data", n_train=6, n_val=2, n_test=2)
    (tmp / "data" / "classes.txt").unlink()
    cfg = write_video_config(tmp / "c.yaml", lists, tmp / "run", data={"img_size": 80})
    rc, out, err = run_main("train", cfg)
    assert rc == 0, err
    return {"out": out, "err": err, "lists": lists, "cfg": cfg, "run": tmp / "run"}


def test_training_prints_a_start_up_summary_then_an_eta(plain_run):
    import aptune
    out, lists = plain_run["out"].splitlines(), plain_run["lists"]
    model = aptune.create_model("tiny", num_classes=2, img_size=80, method="apt", num_prompts=4)
    tunable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    want = [f"aptune: data      6 train videos ({lists['train']}), 2 val, 2 test; 2 classes, numbered 0..1 (no class "
            "names)",
            "aptune: clip      4 frames x stride 2 (dense), 80x80 px; test 2 clips x 3 crops",
            "aptune: backbone  tiny, random init (seed 0) (made for 4x32x32 clips: 32 tokens; this run: 200)",
            "aptune: method    apt (num_prompts=4, prompt_dropout=0.1)",
            "aptune: device    cpu, amp off (fp32), 1 process, 0 loader workers",
            f"aptune: tunable   {tunable:,} of {total:,} parameters ({100 * tunable / total:.2f}%)",
            "aptune: schedule  2 epochs x 3 steps = 6 steps of 2 clips (batch 2 x accum 1 x 1 process); lr 0.00781 "
            "(1 per 256), 1 warm-up epoch, cosine to 0"]
    assert out[:7] == want
    eta = [i for i, x in enumerate(out) if "steps (validation and test not counted)" in x]
    epoch = [i for i, x in enumerate(out) if x.startswith("aptune: epoch 1 ")]
    assert len(eta) == 1 and "3 steps in" in out[eta[0]] and "for the remaining 3 steps" in out[eta[0]]
    assert 7 <= eta[0] < epoch[0]


def test_a_clip_far_from_the_backbones_own_warns_before_the_first_step(plain_run):
    from aptune.engine.summary import token_warning
    err = plain_run["err"]
    warned = err.index("data.num_frames=4, data.img_size=80: 200 tokens per clip, 6x more than the 32")
    assert warned < err.index("epoch 1/2")
    assert "data.num_frames=4 data.img_size=32 uses its own clip" in err
    assert "196x more" in token_warning("vit-demo", 16, 224)        # 8 x 28 x 28 tokens, its own 4 x 4 x 4
    assert token_warning("videomae-vit-b", 8, 112) is not None       # 4 x 7 x 7 = 196: 8x fewer than 1568
    assert token_warning("videomae-vit-b", 16, 112) is None          # 392: exactly 4x fewer
    assert token_warning("vit-demo", 4, 32) is None


def test_no_random_backbone_unless_asked(tmp_path):
    lists = make_video_lists(tmp_path / "data", n_train=4, n_val=0, n_test=0)
    cfg = write_video_config(tmp_path / "c.yaml", lists, tmp_path / "run", model={"name": "vit-demo"},
                             data={"val_list": None, "test_list": None, "sampling_rate": 4},
                             optim={"epochs": 1})
    rc, _, err = run_main("train", cfg)
    assert rc == 2 and not (tmp_path / "run").exists()
    assert "model.checkpoint is not set: vit-demo would train on a randomly initialised backbone" in err
    assert "model.checkpoint=embedded" in err and "model.random_init=true (aptune train --random-backbone)" in err
    rc, out, err = run_main("train", cfg, "--random-backbone")
    assert rc == 0, err
    assert "load it with --random-backbone in aptune eval and predict" in err    # the CLI flag, named
    assert "aptune: backbone  vit-demo, random init (seed 0)" in out


def test_a_folder_of_clips_trains_with_the_shipped_backbone_preset(tmp_path, monkeypatch):
    """README's path for a user with clips and no checkpoint: prepare folder, then the vit-demo preset."""
    from videos import make_video
    for c in ("jump", "wave"):
        (tmp_path / "clips" / c).mkdir(parents=True)
        for i in range(5):
            make_video(tmp_path / "clips" / c / f"{i}.mp4", num_frames=30)
    monkeypatch.chdir(tmp_path)
    preset = Path(__file__).resolve().parent.parent / "configs" / "folder" / "vit_demo_apt.yaml"
    assert run_main("prepare", "folder", "--root", "clips", "--out", "data/folder")[0] == 0
    rc, out, err = run_main("train", str(preset), "data.root=clips", "optim.epochs=1", "optim.batch_size=4",
                            "data.test_clips=1", "data.test_crops=1")
    assert rc == 0, err
    assert "random" not in err and "tokens per clip" not in err               # its own weights and clip
    import aptune
    assert out.count("aptune: backbone  videomae-demo-4f, from ") == 1 and str(Path(aptune.__file__).parent / "assets" /
                                                                          "vit-demo.pth") in out
    meta = json.loads((tmp_path / "runs" / "folder" / "vit_demo_apt" / "adapter" / "adapter.json").read_text())
    assert meta["class_names"] == ["jump", "wave"] and meta["backbone_weights"]["random_seed"] is None


# ---- 7. the smaller run-side findings ---------------------------------------------------------------------
def test_profile_counts_the_models_own_clip():
    rows = {}
    for extra in ([], ["--num-frames", "4", "--img-size", "32"], ["--num-frames", "16", "--img-size", "224"]):
        rc, out, _ = run_main("profile", "--model", "vit-demo", "--methods", "linear", "--json", *extra)
        assert rc == 0
        rows[len(extra) and extra[1]] = json.loads(out.splitlines()[0])["gflops"]
    assert rows[0] == rows["4"] and rows["16"] > 100 * rows["4"]
    rc, out, _ = run_main("profile", "--model", "vit-demo", "--methods", "linear")
    assert "one 4x32x32 view" in out


def test_no_classes_txt_is_said_in_training_and_predict(plain_run, adapter, tmp_path):
    assert f"no classes.txt beside {plain_run['lists']['train']}: the classes are numbered 0..1" in plain_run["err"]
    from videos import make_video
    make_video(tmp_path / "a.mp4", num_frames=20)
    rc, out, err = run_main("predict", str(tmp_path / "a.mp4"), "--adapter", str(adapter / "unnamed"),
                            "--checkpoint", str(adapter / "backbone.safetensors"))
    assert rc == 0 and "records no class names (its training list had no classes.txt beside it)" in err
    assert "  2" in out                                                        # classes by number, as said


def test_top_k_is_shown_with_k_at_most_the_number_of_classes(plain_run):
    out = plain_run["out"]
    assert "val_top2 " in out and "val_top5" not in out                      # 2 classes
    test = next(x for x in out.splitlines() if x.startswith("aptune: test "))
    assert "top-2 " in test and "top-5" not in test


def test_a_folder_named_like_a_video_is_a_directory(tmp_path):
    lists = make_video_lists(tmp_path / "data", n_train=4, n_val=0, n_test=0)
    (Path(lists["root"]) / "x.mp4").mkdir()
    with open(lists["train"], "a") as f:
        f.write("x.mp4 0\n")
    cfg = write_video_config(tmp_path / "c.yaml", lists, tmp_path / "run", data={"val_list": None,
                                                                                 "test_list": None})
    rc, _, err = run_main("train", cfg, "data.skip_bad_videos=false")
    assert rc == 2 and f"{lists['train']}:5: {lists['root']}/x.mp4 (is a directory, not a video file)" in err


@pytest.fixture
def finished(tmp_path):
    """A finished tiny run: 4 videos, batch 2, 2 epochs of 2 steps (warm-up 1 epoch), a test at the end."""
    lists = make_video_lists(tmp_path / "data", n_train=4, n_val=0, n_test=2)
    cfg = write_video_config(tmp_path / "c.yaml", lists, tmp_path / "run", data={"val_list": None},
                             output={"save_every_steps": 1, "keep_last": 10})
    assert run_main("train", cfg)[0] == 0
    return cfg, tmp_path / "run"


def test_resuming_a_finished_run_adds_no_second_test_and_more_epochs_name_the_lr_jump(finished):
    import math
    cfg, run = finished
    rc, out, err = run_main("train", cfg, "--resume")
    assert rc == 0 and "the run is complete: nothing to train" in out and "not run again" in out
    assert [r["step"] for r in records(run, "test")] == [4]
    rc, out, err = run_main("train", cfg, "--resume", "optim.epochs=4")
    assert rc == 0, err
    new = 0.5 * (1 / 256 * 2) * (1 + math.cos(math.pi * 2 / 6))   # cosine over steps 2..8, at step 4
    assert f"lr 0.00e+00 on the old schedule, {new:.2e} on the new one" in err
    assert "the cosine reaches 0.00e+00 at step 8 (was 4)" in err
    assert [r["step"] for r in records(run, "test")] == [4, 8]


def test_ctrl_c_names_the_surviving_checkpoint_and_the_resume_command(tmp_path, monkeypatch):
    from aptune.engine.train import Trainer
    lists = make_video_lists(tmp_path / "data", n_train=4, n_val=0, n_test=0)
    cfg = write_video_config(tmp_path / "c.yaml", lists, tmp_path / "run", data={"val_list": None, "test_list": None},
                             output={"save_every_steps": 1})
    step = Trainer.train_step

    def interrupted(self, *a, **k):
        if self.global_step == 2:
            raise KeyboardInterrupt
        return step(self, *a, **k)
    monkeypatch.setattr(Trainer, "train_step", interrupted)
    rc, _, err = run_main("train", cfg)
    run = tmp_path / "run"
    assert rc == 130
    assert f"interrupted; the newest checkpoint is {run / 'checkpoints' / 'step_00000002.pt'} (step 2)" in err
    assert f"aptune train {run / 'config.yaml'} --resume" in err
    monkeypatch.setattr(Trainer, "train_step", step)
    assert run_main("train", str(run / "config.yaml"), "--resume")[0] == 0


def test_loader_workers_are_capped_at_the_cpu_cores(capsys):
    from aptune.engine.runtime import Runtime, usable_cpus
    n = usable_cpus()
    rt = Runtime.create(None, num_workers=n + 6)
    assert rt.num_workers == n and rt.asked_workers == n + 6
    assert capsys.readouterr().err == f"aptune: data.num_workers={n + 6} capped at the {n} CPU cores of this machine\n"
    assert Runtime.create(None, num_workers=n).num_workers == n and capsys.readouterr().err == ""


def test_a_missing_list_file_says_relative_to_what(tmp_path, monkeypatch):
    from aptune.config import Config
    monkeypatch.chdir(tmp_path)
    cfg = Config.from_dict({"model": {"name": "tiny"}, "data": {"train_list": "data/train.csv", "num_frames": 4,
                                                                "img_size": 32}})
    with pytest.raises(ValueError, match=f"list file not found: data/train.csv \\(relative to the working "
                                         f"directory {tmp_path}\\)"):
        cfg.validate()


def test_docs_cite_what_exists_and_show_the_quick_demo():
    root = Path(__file__).resolve().parent.parent
    assert not [p for p in (root / "configs" / "_base").glob("recipe_*.yaml") if "DESIGN.md" in p.read_text()]
    readme = (root / "README.md").read_text()
    assert "aptune demo --quick" in readme and "configs/folder/vit_demo_apt.yaml" in readme
    assert "relative to the working directory" in (root / "configs" / "README.md").read_text()
