"""Real users' files: phone videos with a display matrix, list files in other encodings, and the
odd files a folder of clips holds (issue 24, the data/file side)."""
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
