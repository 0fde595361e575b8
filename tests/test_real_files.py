"""Real users' files: phone videos with a display matrix, list files in other encodings, and the
odd files a folder of clips holds (issue 24, the data/file side)."""
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from aptune.data.datasets import VideoDataset
from aptune.data.decode import check_video, decode_all, probe, read_frames

from videos import pattern_frame

# PyAV's set_display_rotation takes a counter-clockwise angle; ffmpeg (and players) then show the
# stored picture turned by that angle counter-clockwise, mirrored after it when asked.
ORIENTATIONS = {  # name -> (degrees, hflip, vflip, what ffmpeg shows, written plainly)
    "rot90": (90, False, False, lambda f: np.rot90(f, 1)),
    "rot180": (180, False, False, lambda f: f[::-1, ::-1]),
    "rot270": (270, False, False, lambda f: np.rot90(f, -1)),
    "hflip": (0, True, False, lambda f: f[:, ::-1]),
    "vflip": (0, False, True, lambda f: f[::-1]),
    "rot90_hflip": (90, True, False, lambda f: np.rot90(f, 1)[:, ::-1]),
}


def write_clip(path, n=12, rotation=None, width=128, height=64):
    """Pattern frames (tests/videos.py) in MP4/H.264, single-threaded (the same bits every time);
    `rotation` = (degrees, hflip, vflip) stored as the stream's display matrix."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.codec_context.gop_size = 5
        s.codec_context.thread_count = 1
        s.options = {"preset": "ultrafast", "crf": "18", "bf": "2"}
        if rotation is not None:
            s.set_display_rotation(rotation[0], hflip=rotation[1], vflip=rotation[2])
        for i in range(n):
            for pkt in s.encode(av.VideoFrame.from_ndarray(pattern_frame(i, width, height), format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return path


@pytest.fixture(scope="module")
def plain_clip(tmp_path_factory):
    path = write_clip(tmp_path_factory.mktemp("rot") / "plain.mp4")
    with av.open(str(path)) as c:   # independent reference: PyAV's own decode, no display matrix
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    return path, frames


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_display_matrix_applied_as_ffmpeg_shows_it(tmp_path, plain_clip, name):
    deg, hflip, vflip, shown = ORIENTATIONS[name]
    _, stored = plain_clip
    path = write_clip(tmp_path / f"{name}.mp4", rotation=(deg, hflip, vflip))
    expected = np.stack([shown(f) for f in stored])                 # (N, H', W', 3)
    info = probe(path)
    assert (info.height, info.width) == expected.shape[1:3]          # the upright size
    assert np.array_equal(decode_all(path).numpy(), expected)
    idx = [7, 2, 11, 2]
    assert np.array_equal(read_frames(path, idx).numpy(), expected[idx])
    assert check_video(path)[0] is None


def test_test_views_follow_the_upright_size(tmp_path, plain_clip):
    _, stored = plain_clip
    path = write_clip(tmp_path / "phone.mp4", rotation=(270, False, False))   # shown 64 wide, 128 tall
    upright = [torch.from_numpy(np.ascontiguousarray(np.rot90(stored, -1, axes=(1, 2))))]
    kw = dict(mode="test", num_frames=4, sampling_rate=2, img_size=32, num_clips=2, num_crops=3)
    from_file = VideoDataset([(str(path), 0)], **kw)[0][0]
    reference = VideoDataset.from_frames(upright, **kw)[0][0]
    assert from_file.shape == (6, 3, 4, 32, 32)
    assert torch.equal(from_file, reference)


# ------------------------------------------------------------------ list files
def cli(capsys, *argv):
    """(exit code, stdout, stderr) of `aptune ARGV` run in-process."""
    from aptune.cli import main
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def video_dir(tmp_path):
    from videos import make_video
    make_video(tmp_path / "a b é.mp4", num_frames=20)
    make_video(tmp_path / "c.mp4", num_frames=20)
    return tmp_path


LIST = "a b é.mp4 0\nc.mp4 1\n"
ENCODINGS = {  # name -> how a user's editor may save a text
    "utf-8": lambda t: t.encode("utf-8"),
    "utf-8 BOM": lambda t: b"\xef\xbb\xbf" + t.encode("utf-8"),
    "utf-16-le BOM": lambda t: t.encode("utf-16"),              # Python writes the BOM, little-endian
    "utf-16-be BOM": lambda t: b"\xfe\xff" + t.replace("\n", "\r\n").encode("utf-16-be"),
}


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_list_files_in_text_encodings_read_the_same(video_dir, capsys, name):
    from aptune.data.prepare import read_class_names, read_list_lines
    lst = video_dir / "train.csv"
    lst.write_bytes(ENCODINGS[name](LIST))
    assert read_list_lines(lst) == [("a b é.mp4", 0, 1), ("c.mp4", 1, 2)]
    (video_dir / "classes.txt").write_bytes(ENCODINGS[name]("marche à pied\nrun\n"))
    assert read_class_names(video_dir / "classes.txt") == ["marche à pied", "run"]
    rc, out, err = cli(capsys, "check-videos", lst, "--root", video_dir, "--num-frames", "4", "--no-progress")
    assert rc == 0 and "2 videos: 2 ok, 0 bad" in out, out + err


NOT_TEXT = {  # name -> (bytes, line the error names)
    "binary": (bytes(range(256)) * 4, 1),
    "bit-flipped": (LIST.encode().replace(b"c.mp4", b"c.m\xf04"), 2),
    "garbage prefix": (b"\x89PNG\r\n\x1a\n\x00\x00" + LIST.encode(), 1),
    "utf-16 without BOM": ("x.mp4 0\n".encode("utf-16-le") * 2, 1),
    "latin-1": ("ok.mp4 0\nà.mp4 1\n".encode("latin-1"), 2),
}


@pytest.mark.parametrize("name", list(NOT_TEXT))
def test_non_text_list_is_refused_in_one_line(tmp_path, capsys, name):
    from aptune.data.datasets import VideoDataset
    from aptune.errors import DataError
    data, line = NOT_TEXT[name]
    lst = tmp_path / "train.csv"
    lst.write_bytes(data)
    rc, out, err = cli(capsys, "check-videos", lst, "--no-progress")
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"aptune: error: {lst}:{line}: not a text file"), err
    with pytest.raises(DataError, match=f"{lst}:{line}: not a text file"):  # train/eval build this dataset
        VideoDataset(str(lst))


def test_class_list_not_text_is_refused(video_dir):
    from aptune.data.datasets import VideoDataset
    from aptune.errors import DataError
    (video_dir / "train.csv").write_text(LIST)
    (video_dir / "classes.txt").write_bytes(b"walk\n\xff\xfe\xfd\n")
    with pytest.raises(DataError, match=r"classes.txt:2: not a text file"):
        VideoDataset(str(video_dir / "train.csv"), root=video_dir)


def test_empty_list_names_the_file_and_fails_check_videos(tmp_path, capsys):
    from aptune.data.datasets import VideoDataset
    lst = tmp_path / "val.csv"
    lst.write_text("\n  \n")
    rc, out, err = cli(capsys, "check-videos", lst, "--no-progress")
    assert rc == 2 and f"list file {lst} is empty" in err
    with pytest.raises(ValueError, match=f"list file {lst} is empty"):
        VideoDataset(str(lst))


def test_label_past_class_names_names_list_line_and_classes_file(video_dir):
    from aptune.data.datasets import VideoDataset
    (video_dir / "train.csv").write_text("c.mp4 1\na b é.mp4 7\nc.mp4 0\n")
    (video_dir / "classes.txt").write_text("walk\nrun\njump\n")
    with pytest.raises(ValueError, match=r"train.csv:2: label 7 >= number of class names \(3, from .*classes.txt\)"):
        VideoDataset(str(video_dir / "train.csv"), root=video_dir)


def test_list_that_is_a_directory(tmp_path, capsys):
    (tmp_path / "train.csv").mkdir()
    rc, out, err = cli(capsys, "check-videos", tmp_path / "train.csv", "--no-progress")
    assert rc == 2 and "is a directory" in err


# ------------------------------------------------------------------ odd video files
def test_still_images_named_mp4_are_not_videos(tmp_path, capsys):
    from PIL import Image

    from aptune.data.decode import BadVideoError

    from videos import make_video
    img = Image.fromarray(np.full((32, 48, 3), 90, np.uint8))
    img.save(tmp_path / "photo.png")
    (tmp_path / "photo.png").rename(tmp_path / "photo.mp4")
    img.save(tmp_path / "photo.jpg")
    (tmp_path / "photo.jpg").rename(tmp_path / "photo2.mp4")
    img.save(tmp_path / "still.gif")
    (tmp_path / "still.gif").rename(tmp_path / "still.mp4")
    frames = [Image.fromarray(np.full((32, 48, 3), 40 * i, np.uint8)) for i in range(4)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=40)
    for name in ("photo.mp4", "photo2.mp4", "still.mp4"):
        with pytest.raises(BadVideoError, match="not a video: a still image"):
            read_frames(tmp_path / name, [0])
        assert check_video(tmp_path / name) == ("undecodable", check_video(tmp_path / name)[1])
        assert "still image" in check_video(tmp_path / name)[1]
    assert read_frames(tmp_path / "anim.gif", [0, 3]).shape == (2, 32, 48, 3)   # an animation is a video
    make_video(tmp_path / "ok.mp4", num_frames=20)
    (tmp_path / "l.csv").write_text("ok.mp4 0\nphoto.mp4 1\n")
    rc, out, err = cli(capsys, "check-videos", tmp_path / "l.csv", "--root", tmp_path, "--num-frames", "4",
                       "--no-progress")
    assert rc == 1 and "photo.mp4: not a video: a still image" in out and "1 ok, 1 bad" in out


def test_damaged_videos_give_readable_reasons(tmp_path):
    from aptune.data.decode import BadVideoError

    from videos import make_video
    good = make_video(tmp_path / "good.mp4", num_frames=30, faststart=True).read_bytes()
    mkv = make_video(tmp_path / "good.mkv", num_frames=30).read_bytes()
    (tmp_path / "header.mp4").write_bytes(b"\0" * 64 + good[64:])
    (tmp_path / "cut.mp4").write_bytes(good[: len(good) // 2])
    (tmp_path / "cut.mkv").write_bytes(mkv[:300])
    (tmp_path / "folder.mp4").mkdir()
    reasons = {}
    for name in ("header.mp4", "cut.mp4", "cut.mkv", "folder.mp4"):
        with pytest.raises(BadVideoError) as e:
            read_frames(tmp_path / name, [0, 25])
        reasons[name] = (e.value.reason, check_video(tmp_path / name))
    for reason, (_, detail) in reasons.values():
        assert "Errno" not in reason + detail and "avcodec" not in detail
    assert "invalid data found when processing input" in reasons["header.mp4"][0]
    assert "no video stream" not in reasons["header.mp4"][0]
    assert reasons["cut.mp4"][1][0] == "truncated"
    assert "the file ends inside its header" in reasons["cut.mkv"][0]
    assert reasons["folder.mp4"][0] == reasons["folder.mp4"][1][1] == "is a directory, not a video file"


# ------------------------------------------------------------------ prepare folder
def make_class_tree(root, classes):
    from videos import make_video
    root.mkdir(parents=True, exist_ok=True)
    clip = make_video(root / "_clip.mp4", num_frames=8)
    for c, names in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for n in names:
            (root / c / n).write_bytes(clip.read_bytes())
    clip.unlink()


def test_prepare_folder_skips_hidden_files_and_empty_folders(tmp_path, capsys):
    make_class_tree(tmp_path / "raw", {"run": ["a.mp4", "b.mp4", ".c.mp4", "._a.mp4"],
                                       "walk": ["d.mp4", "e.mp4"], "empty": [], ".Trash": ["f.mp4"]})
    (tmp_path / "raw" / "walk" / ".cache").mkdir()
    (tmp_path / "raw" / "walk" / ".cache" / "g.mp4").write_bytes(b"x")
    rc, out, err = cli(capsys, "prepare", "folder", "--root", tmp_path / "raw", "--out", tmp_path / "lists",
                       "--val-fraction", "0.5")
    assert rc == 0, err
    assert (tmp_path / "lists" / "classes.txt").read_text() == "run\nwalk\n"
    listed = (tmp_path / "lists" / "train.csv").read_text() + (tmp_path / "lists" / "val.csv").read_text()
    assert sorted(listed.split()[::2]) == ["run/a.mp4", "run/b.mp4", "walk/d.mp4", "walk/e.mp4"]
    assert "hold no videos and are not classes: empty" in err
    assert "single video" not in err



def test_predict_pretrain_and_transcode_leave_hidden_files_out(tmp_path):
    """The folder walks of predict, pretrain and transcode skip `.x.mp4` / macOS `._x.mp4` as prepare does."""
    from aptune.data.transcode import plan
    from aptune.prediction import find_videos
    from aptune.pretrain import pretrain_entries
    make_class_tree(tmp_path / "raw", {"run": ["a.mp4", ".c.mp4", "._a.mp4"], ".Trash": ["f.mp4"]})
    want = [tmp_path / "raw" / "run" / "a.mp4"]
    assert find_videos(str(tmp_path / "raw")) == want
    assert [Path(p) for p, _ in pretrain_entries(tmp_path / "raw")] == want
    assert [Path(src) for src, _ in plan([tmp_path / "raw"], tmp_path / "out").jobs] == want

def test_prepare_again_says_when_labels_change(tmp_path, capsys):
    make_class_tree(tmp_path / "raw", {"run": ["a.mp4", "b.mp4"], "walk": ["c.mp4", "d.mp4"]})
    argv = ("prepare", "folder", "--root", tmp_path / "raw", "--out", tmp_path / "lists")
    assert cli(capsys, *argv)[0] == 0
    rc, out, err = cli(capsys, *argv)                      # the same folder again: nothing to say
    assert rc == 0 and "classes changed" not in err
    make_class_tree(tmp_path / "raw", {"jump": ["e.mp4", "f.mp4"]})
    rc, out, err = cli(capsys, *argv)
    assert rc == 0 and "the classes changed (2 -> 3)" in err
    assert "run 0->1" in err and "walk 1->2" in err and "added jump" in err


# ------------------------------------------------------------------ adapters and checkpoints
@pytest.fixture
def adapter_dir(tmp_path):
    import aptune
    model = aptune.create_model("tiny", num_classes=3, method="linear")
    return aptune.save_adapter(model, tmp_path / "adapter", class_names=["a", "b", "c"])


@pytest.mark.parametrize("name", ["adapter.safetensors", "adapter.json"])
def test_inspect_checkpoint_on_a_file_of_an_adapter_folder(adapter_dir, capsys, name):
    rc, out, err = cli(capsys, "inspect-checkpoint", adapter_dir / name)
    assert rc == 2 and out == ""
    assert err == f"aptune: error: {adapter_dir / name} is part of an adapter folder: pass the folder {adapter_dir}\n"
    assert cli(capsys, "inspect-checkpoint", adapter_dir)[0] == 0


def test_adapter_class_names_must_match_the_head(adapter_dir):
    import json

    import aptune
    from aptune.errors import CheckpointError
    meta = json.loads((adapter_dir / "adapter.json").read_text())
    meta["class_names"] = ["a", "b", "c", "d"]
    (adapter_dir / "adapter.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"adapter.json: 4 class_names for a head of 3 classes"):
        aptune.load_adapter(adapter_dir, allow_random_backbone=True)


# ------------------------------------------------------------------ found by benchmarks/fuzz_inputs.py
def test_checkpoint_zip_with_damaged_directory_is_a_one_line_error(tmp_path, capsys):
    import aptune
    path = tmp_path / "step_00000001.pt"
    torch.save({"model": aptune.create_model("tiny", num_classes=2).state_dict()}, path)
    data = path.read_bytes()
    at = data.index(b"PK\x01\x02")                    # first central-directory record; the end record stays
    path.write_bytes(data[:at] + b"PK\x01\x03" + data[at + 4:])
    rc, out, err = cli(capsys, "inspect-checkpoint", path)
    assert rc == 2 and err.startswith(f"aptune: error: {path}: not a readable PyTorch checkpoint"), err


def test_hf_folder_config_not_utf8_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_bytes(b'{"model_type": "videomae", "x": "\xe9"}')
    rc, out, err = cli(capsys, "inspect-checkpoint", tmp_path / "hf")
    assert rc == 2 and err.startswith("aptune: error: ") and err.count("\n") == 1, err
    assert "config.json: not valid JSON" in err


def test_yaml_config_not_utf8_names_file_and_line(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_bytes(b"model:\n  name: tiny\n# caf\xe9\n")
    rc, out, err = cli(capsys, "train", cfg)
    assert rc == 2 and err == f"aptune: error: {cfg}:3: not a text file: byte 25 (0xe9) is not UTF-8\n"
