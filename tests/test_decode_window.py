"""The training loader's window reads (issue 26): frames nobody wants that no frame refers to are not
decoded, and what is read stays equal to a full decode."""
import av
import torch

from aptune.data.decode import decode_all, read_frames

from videos import frame_index, pattern_frame


def test_window_reads_skip_unwanted_b_frames_and_stay_exact(tmp_path):
    """Dense windows on H.264 with a B-pyramid (some B-frames are references, some not): the frames
    read while unwanted non-reference frames are skipped equal a full decode (issue 26's decode path)."""
    path = tmp_path / "bpyr.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 128, 64, "yuv420p"
        s.codec_context.gop_size = 30
        s.options = {"preset": "medium", "bf": "3", "b-pyramid": "normal", "threads": "1"}
        for i in range(90):
            out.mux(s.encode(av.VideoFrame.from_ndarray(pattern_frame(i), format="rgb24")))
        out.mux(s.encode(None))
    full = decode_all(path)
    assert [frame_index(f) for f in full] == list(range(90))
    for start in (0, 13, 37, 58):
        idx = [start + 4 * t for t in range(8)]
        assert torch.equal(read_frames(path, idx), full[idx])
