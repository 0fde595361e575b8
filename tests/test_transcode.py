"""`aptune transcode`: every frame kept in order with its timestamp, the short side scaled, keyframes at
the fixed interval, phone orientation applied, lists rewritten, bad videos reported and left out."""
import av
import numpy as np
import pytest
import torch

from aptune.cli import main
from aptune.data import VideoDataset
from aptune.data.decode import decode_all, probe
from aptune.data.transcode import output_size, plan, transcode_video
from aptune.errors import DataError

from videos import frame_index, make_video, pattern_frame


def _keyframes(path) -> list[int]:
    with av.open(str(path)) as c:
        packets = sorted((p for p in c.demux(video=0) if p.size), key=lambda p: p.pts)
        return [i for i, p in enumerate(packets) if p.is_keyframe]


def _timestamps(path) -> list[float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sorted(float(p.pts * s.time_base) for p in c.demux(s) if p.size)


def test_frames_kept_in_order_with_their_times_and_keyframes_every_k(tmp_path):
    src = make_video(tmp_path / "a.avi", num_frames=30, width=128, height=64, fps=25, gop=7)
    w, h, n = transcode_video(src, tmp_path / "out" / "a.mp4", short_side=64, keyframe_interval=8)
    out = tmp_path / "out" / "a.mp4"
    assert (w, h, n) == (128, 64, 30) and probe(out).num_frames == 30 and probe(out).fps == 25
    assert [frame_index(f) for f in decode_all(out)] == list(range(30))    # every frame, in order
    assert _keyframes(out) == [0, 8, 16, 24]                               # not the source's 0, 7, 14, ...
    assert _timestamps(out) == pytest.approx([i / 25 for i in range(30)], abs=1e-3)
    assert not list(tmp_path.glob("out/.*"))                               # no temporary file left


def test_short_side_scaled_and_picture_kept(tmp_path):
    frames = [pattern_frame(i, 256, 128) for i in range(6)]
    src = tmp_path / "wide.mp4"
    with av.open(str(src), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt, s.options = 256, 128, "yuv420p", {"crf": "10", "preset": "ultrafast"}
        for f in frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode(None))
    assert transcode_video(src, tmp_path / "small.mp4", short_side=64)[:2] == (128, 64)
    got = decode_all(tmp_path / "small.mp4").float()
    ref = torch.nn.functional.interpolate(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float(),
                                          size=(64, 128), mode="bilinear", antialias=True).permute(0, 2, 3, 1)
    assert (got - ref).abs().mean() < 6                                    # the same picture, smaller
    assert output_size(1280, 720, 320) == (568, 320) and output_size(240, 426, 320) == (240, 426)
    assert output_size(720, 1280, 320) == (320, 568)                       # portrait: the width is short


def test_phone_orientation_applied(tmp_path):
    src = tmp_path / "phone.mp4"
    with av.open(str(src), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt, s.options = 128, 64, "yuv420p", {"crf": "10", "preset": "ultrafast"}
        s.set_display_rotation(90)                                         # shown 64 wide, 128 tall
        for i in range(5):
            out.mux(s.encode(av.VideoFrame.from_ndarray(pattern_frame(i), format="rgb24")))
        out.mux(s.encode(None))
    upright = decode_all(src)                                              # (5, 128, 64, 3)
    assert transcode_video(src, tmp_path / "up.mp4", short_side=64)[:2] == (64, 128)
    got = decode_all(tmp_path / "up.mp4")                                  # no display matrix: stored upright
    assert got.shape == upright.shape and (got.float() - upright.float()).abs().mean() < 3


def test_command_rewrites_lists_and_reports_bad_videos(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    (raw / "walk").mkdir(parents=True)
    for k, ext in enumerate(("avi", "webm", "mp4")):
        make_video(raw / "walk" / f"v{k}.{ext}", num_frames=12, width=128, height=64)
    (raw / "walk" / "empty.mp4").write_bytes(b"")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.csv").write_text("walk/v0.avi 0\nwalk/empty.mp4 1\nwalk/v1.webm 1\nwalk/gone.mp4 0\n")
    (lists / "val.csv").write_text("walk/v2.mp4 1\nwalk/v0.avi 0\n")
    (lists / "classes.txt").write_text("walk\nrun\n")
    argv = ["transcode", str(lists / "train.csv"), str(lists / "val.csv"), "--root", str(raw), "--out", str(out),
            "--short-side", "32", "--workers", "2", "--no-progress"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "3 of 5 videos" in captured.out and "empty.mp4" in captured.err
    assert (out / "train.csv").read_text() == "walk/v0.mp4 0\nwalk/v1.mp4 1\n"
    assert (out / "val.csv").read_text() == "walk/v2.mp4 1\nwalk/v0.mp4 0\n"
    assert (out / "classes.txt").read_text() == "walk\nrun\n"
    errors = (out / "transcode_errors.txt").read_text().splitlines()
    assert len(errors) == 2 and errors[0].startswith(f"{lists / 'train.csv'}:2: ") and "gone.mp4" in errors[1]
    ds = VideoDataset(out / "train.csv", root=out, mode="val", num_frames=4, img_size=32)
    assert ds.class_names == ["walk", "run"] and ds[1][0].shape == (3, 4, 32, 32)
    assert probe(out / "walk" / "v1.mp4").num_frames == 12 and probe(out / "walk" / "v1.mp4").height == 32
    stamp = (out / "walk" / "v0.mp4").stat().st_mtime_ns                   # a second run keeps what is there
    assert main(argv) == 1 and (out / "walk" / "v0.mp4").stat().st_mtime_ns == stamp


def test_folder_layout_kept_and_bad_plans_refused(tmp_path):
    for c in ("jump", "walk"):
        (tmp_path / "f" / c).mkdir(parents=True)
        make_video(tmp_path / "f" / c / "a.avi", num_frames=4)
    p = plan([str(tmp_path / "f")], tmp_path / "o")
    assert sorted(d for _, d in p.jobs) == [str(tmp_path / "o" / c / "a.mp4") for c in ("jump", "walk")]
    make_video(tmp_path / "f" / "walk" / "a.webm", num_frames=4)          # a.avi and a.webm -> a.mp4
    with pytest.raises(DataError, match="would both be written"):
        plan([str(tmp_path / "f")], tmp_path / "o")
    (tmp_path / "abs.csv").write_text(f"{tmp_path / 'f' / 'jump' / 'a.avi'} 0\n")
    with pytest.raises(DataError, match=r"abs\.csv:1: .*--root"):
        plan([str(tmp_path / "abs.csv")], tmp_path / "o")

