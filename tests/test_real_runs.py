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
    assert "cannot open container" in named[0] and "data.skip_bad_videos" in named[0]
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
    assert "cannot open container" in msg and "data.skip_bad_videos" in msg and "aptune check-videos" in msg
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
    assert "b.mp4: could not be decoded: undecodable" in lines[4]
    assert "1 of 3 videos could not be decoded" in out.err
    # --json: the error in its place; the good answers are the ones each video gets alone
    assert main(["predict", str(tmp_path / "clips" / "a.mp4"), str(tmp_path / "clips" / "b.mp4"),
                 str(tmp_path / "clips" / "c.mp4"), *args, "--json"]) == 1
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [sorted(r) for r in rows] == [["top", "video"], ["error", "video"], ["top", "video"]]
    assert "cannot open container" in rows[1]["error"]
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
