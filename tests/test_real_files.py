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
