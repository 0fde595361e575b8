"""aptune's views against the APT authors' protocol (wgcban/apt `kinetics.py` VideoClsDataset,
`ssv2.py` SSVideoClsDataset, frames read with decord `get_batch`, `video_transforms.py`).

`authors_*` restate their index rules step by step with the same arithmetic (numpy linspace,
int() truncation, padding by the last entry, sort and split); the test videos' frames carry
their own index (tests/videos.py), so the frames a view holds are read back from its pixels.
`cv2_linear` is a numpy model of OpenCV's resize(INTER_LINEAR) on 8-bit images (OpenCV is
not a dependency) to check the pixels of a resized view.
"""
import json

import numpy as np
import pytest
import torch

from aptune.cli import main
from aptune.data import VideoDataset
from aptune.data import sampling as S
from aptune.data import transforms as TR
from aptune.data.decode import decode_all

from helpers import FixedDraw
from videos import frame_index, make_video

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)


# ------------------------------------------------------------------ the authors' rules
def authors_dense_test(n, T, r, K):
    """VideoClsDataset mode 'test': decode every r-th frame, pad with the last one to T;
    clip k = buffer[int(k * step) : + T], step = max((len - T) / (K - 1), 0)."""
    index = list(range(0, n, r))
    while len(index) < T:
        index.append(index[-1])
    step = max(1.0 * (len(index) - T) / (K - 1), 0)
    return [index[int(k * step):int(k * step) + T] for k in range(K)]


def authors_segment_test(n, T, V):
    """SSVideoClsDataset mode 'test' (num_segment = T, test_num_segment = V <= 2): tick
    midpoints and starts together, padded to T * V, sorted; view v = sorted[v::2]."""
    tick = n / float(T)
    index = [int(tick / 2.0 + tick * x) for x in range(T)] + [int(tick * x) for x in range(T)]
    while len(index) < T * V:
        index.append(index[-1])
    index = sorted(index)
    return [index[v::2] for v in range(V)]


def authors_dense_train(n, T, r, end):
    """Training (num_segment = 1) for a given random end (np.random.randint(T*r, n))."""
    window = T * r
    if n <= window:
        index = np.linspace(0, n, num=n // r)
        index = np.concatenate((index, np.ones(T - n // r) * n))
        return np.clip(index, 0, n - 1).astype(np.int64).tolist()
    start = end - window
    index = np.linspace(start, end, num=T)
    return np.clip(index, start, end - 1).astype(np.int64).tolist()


def authors_segment_train(n, T, offsets):
    """SSv2 training for given offsets (np.random.randint(avg, size=T))."""
    avg = n // T
    if avg > 0:
        return (np.arange(T) * avg + np.asarray(offsets)).tolist()
    return [0] * T  # their `elif n > T` branch cannot be reached when avg == 0


def authors_view_box(h, w, S_, C, c):
    """(top, left) of crop c of C after their resize: the long side int(S * long / short)
    (no resize when the short side is S), crops along the height when H >= W; one crop is
    their CenterCrop (their test code divides by zero for C = 1)."""
    if min(h, w) != S_:
        h, w = (int(S_ * h / w), S_) if w < h else (S_, int(S_ * w / h))
    if C == 1:
        return int(round((h - S_) / 2.)), int(round((w - S_) / 2.))
    start = int(c * (1.0 * (max(h, w) - S_) / (C - 1)))
    return (start, 0) if h >= w else (0, start)


# ------------------------------------------------------------------ index rules
def test_issue_frame_lists_80_frames():
    """The lists quoted in issue 15 (80 frames; 16 x 4 dense, 16 segments)."""
    assert [c[0] for c in S.dense_test(80, 16, 4, 5)] == [0, 4, 8, 12, 16]
    assert S.dense_test(80, 16, 4, 5)[4] == list(range(16, 80, 4))
    assert [c[0] for c in S.dense_test(80, 16, 4, 10)] == [0, 0, 0, 4, 4, 8, 8, 12, 12, 16]
    assert S.segment_test(80, 16, 2) == [list(range(0, 80, 5)), list(range(2, 80, 5))]
    # 20 frames: 0, 4, ..., 16, then 16 (not 19) repeated; every clip the same
    assert S.dense_test(20, 16, 4, 5) == [[0, 4, 8, 12, 16] + [16] * 11] * 5


@pytest.mark.parametrize("T,r", [(16, 4), (16, 2), (8, 8), (8, 1), (4, 3)])
def test_dense_test_matches_authors(T, r):
    for n in range(1, 301):
        for K in (2, 3, 5, 10):
            assert S.dense_test(n, T, r, K) == authors_dense_test(n, T, r, K), (n, K)


@pytest.mark.parametrize("T", [16, 8, 7])
def test_segment_test_matches_authors(T):
    for n in range(1, 301):
        for V in (1, 2):
            assert S.segment_test(n, T, V) == authors_segment_test(n, T, V), (n, V)


def test_segment_test_with_three_or_more_views_by_hand():
    """The authors' loader stops at 2 views; aptune's view v of V starts at tick * v / V (the authors' tick / 2
    for V = 2). Written out for 80 frames (tick 5): 3 views start at 0, 5/3 and 10/3, 4 views at 0, 1.25,
    2.5 and 3.75, truncated."""
    assert S.segment_test(80, 16, 3) == [list(range(0, 80, 5)), list(range(1, 80, 5)), list(range(3, 80, 5))]
    assert S.segment_test(80, 16, 4) == [list(range(o, 80, 5)) for o in (0, 1, 2, 3)]
    # 48 frames, 8 segments (tick 6): 3 views at 0, 2, 4
    assert S.segment_test(48, 8, 3) == [[0, 6, 12, 18, 24, 30, 36, 42], [2, 8, 14, 20, 26, 32, 38, 44],
                                        [4, 10, 16, 22, 28, 34, 40, 46]]


@pytest.mark.parametrize("T,r", [(16, 4), (8, 2), (4, 3)])
def test_dense_train_matches_authors(T, r):
    for n in range(1, 200):
        ends = range(T * r, n) if n > T * r else [None]
        for end in ends:
            draw = FixedDraw(end)
            assert S.dense_train(n, T, r, draw) == authors_dense_train(n, T, r, end), (n, end)
            assert draw.calls == ([(T * r, n)] if end is not None else [])


def test_segment_train_matches_authors():
    rng = np.random.default_rng(0)
    for T in (16, 8):
        for n in range(1, 300):
            avg = n // T
            offsets = rng.integers(0, max(avg, 1), T).tolist()
            draw = FixedDraw(*offsets)
            assert S.segment_train(n, T, draw) == authors_segment_train(n, T, offsets), (n, T)
            assert draw.calls == ([(avg,)] * T if avg else [])


def test_crop_offsets_match_authors():
    for h, w in [(240, 320), (320, 240), (224, 224), (224, 400), (400, 224), (256, 340),
                 (360, 480), (101, 171), (112, 112), (480, 854), (300, 301)]:
        size = TR.short_side_size(h, w, 224)
        for C in (1, 2, 3, 5):
            for c in range(C):
                off = TR.crop_offsets(max(size), 224, C)[c]
                want = authors_view_box(h, w, 224, C, c)
                got = (off, 0) if size[0] >= size[1] else (0, off)
                assert got == want, (h, w, C, c)
    assert TR.short_side_size(240, 320, 224) == (224, 298)  # int(298.67), not 299
    assert TR.crop_offsets(298, 224, 3) == [0, 37, 74] and TR.crop_offsets(299, 224, 3) == [0, 37, 75]
    assert TR.crop_offsets(298, 224, 1) == [37] and TR.crop_offsets(299, 224, 1) == [38]
    assert TR.crop_offsets(297, 224, 1) == [36]  # round(36.5) = 36, as Python rounds
    assert TR.crop_offsets(224, 224, 3) == [0, 0, 0]


# ------------------------------------------------------------------ views of real videos
@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """Videos whose frames carry their index, 256 x 128: short side 128 = img_size, so
    views are crops of the decoded frames (no resize) and the left crop holds all 8 bits."""
    d = tmp_path_factory.mktemp("indexed")
    for n in (20, 80, 131):
        make_video(d / f"n{n}.mp4", num_frames=n, width=256, height=128, gop=12)
    return d


def _frames_of(view):
    """Normalised (3, T, S, S) -> the index each frame carries."""
    u8 = ((view * STD + MEAN).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 3, 0)
    return [frame_index(f) for f in u8]


def _crop(full, frames, top, left, size):
    """Reference view: decoded frames, one crop, normalised -> (3, T, size, size)."""
    x = full[frames][:, top:top + size, left:left + size].permute(3, 0, 1, 2).float() / 255
    return (x - MEAN) / STD


@pytest.mark.parametrize("n", [20, 80, 131])
def test_dense_views_hold_the_authors_frames(indexed, n):
    full = decode_all(indexed / f"n{n}.mp4")
    assert len(full) == n
    for K, C in ((5, 3), (10, 1)):
        ds = VideoDataset([(f"n{n}.mp4", 0)], root=indexed, mode="test", num_frames=16,
                          sampling_rate=4, img_size=128, num_clips=K, num_crops=C)
        views, _, _ = ds[0]
        assert views.shape == (K * C, 3, 16, 128, 128)
        clips = authors_dense_test(n, 16, 4, K)
        for v in range(K * C):
            k, c = divmod(v, C)
            top, left = authors_view_box(128, 256, 128, C, c)
            if left == 0:
                assert _frames_of(views[v]) == clips[k], (K, v)
            torch.testing.assert_close(views[v], _crop(full, clips[k], top, left, 128))


@pytest.mark.parametrize("n", [20, 80, 131])
def test_segment_views_hold_the_authors_frames(indexed, n):
    full = decode_all(indexed / f"n{n}.mp4")
    ds = VideoDataset([(f"n{n}.mp4", 0)], root=indexed, mode="test", sampling="segment",
                      num_frames=16, img_size=128, num_clips=2, num_crops=3)
    views, _, _ = ds[0]
    want = authors_segment_test(n, 16, 2)
    for v in range(6):
        k, c = divmod(v, 3)
        top, left = authors_view_box(128, 256, 128, 3, c)
        if left == 0:
            assert _frames_of(views[v]) == want[k], v
        torch.testing.assert_close(views[v], _crop(full, want[k], top, left, 128))


def test_one_dense_clip_is_the_centre_of_the_strided_buffer(indexed):
    """K = 1 (the authors' code divides by zero): the clip starting at (len(buffer) - 16) // 2. By hand:
    131 frames -> buffer 0, 4, ..., 128 (33 entries), 17 to spare, start 8 -> frames 32 ... 92;
    80 frames -> 20 entries, start 2 -> frames 8 ... 68; 20 frames -> padded buffer, start 0."""
    want = {131: list(range(32, 96, 4)), 80: list(range(8, 72, 4)), 20: [0, 4, 8, 12, 16] + [16] * 11}
    for n, frames in want.items():
        ds = VideoDataset([(f"n{n}.mp4", 0)], root=indexed, mode="test", num_frames=16, sampling_rate=4,
                          img_size=128, num_clips=1, num_crops=3)
        views, _, _ = ds[0]
        assert views.shape == (3, 3, 16, 128, 128)
        assert _frames_of(views[0]) == frames, n           # crop 0 (left edge) holds all 8 bits of the index


def test_three_segment_views_of_a_real_video(indexed):
    ds = VideoDataset([("n80.mp4", 0)], root=indexed, mode="test", sampling="segment", num_frames=16,
                      img_size=128, num_clips=3, num_crops=3)
    views, _, _ = ds[0]                                  # view = clip x 3 + crop; crop 0 holds all 8 bits
    assert [_frames_of(views[3 * k]) for k in range(3)] == [list(range(o, 80, 5)) for o in (0, 1, 3)]


def test_train_and_val_windows(indexed):
    """Training and validation take the authors' training window (val: a draw fixed per
    item); validation decodes exactly those frames, centre crop at x = round(128 / 2)."""
    full = decode_all(indexed / "n80.mp4")
    for mode in ("train", "val"):
        ds = VideoDataset([("n80.mp4", 0)], root=indexed, mode=mode, num_frames=16,
                          sampling_rate=4, img_size=128)
        (frames,) = ds.clip_indices(80, 0)
        assert frames == authors_dense_train(80, 16, 4, frames[-1] + 1)  # last = end - 1
        assert ds.clip_indices(80, 0) == [frames]
    clip = ds[0][0]
    assert _frames_of(clip[..., :64]) == [f >> 4 for f in frames]  # x 64-127: bits 4-7
    torch.testing.assert_close(clip, _crop(full, frames, 0, 64, 128))


# ------------------------------------------------------------------ pixels after a resize
def cv2_linear(img, out_h, out_w):
    """OpenCV resize(INTER_LINEAR) of uint8 (H, W, C), modelled in numpy: the source position
    (d + 0.5) * scale - 0.5 in float32, clamped to the image; weights 1 - f and f rounded to
    11 bits each; a horizontal pass into integers, then a vertical pass rounded by a 22-bit
    shift. (OpenCV's SIMD vertical pass rounds within one grey level of this.)"""
    def taps(n_in, n_out):
        scale = 1.0 / (n_out / n_in)  # OpenCV: scale = 1 / inv_scale, inv_scale = out / in
        f = ((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32)
        s = np.floor(f).astype(np.int64)
        f = f - s.astype(np.float32)
        f[s < 0], s[s < 0] = 0, 0
        last = s >= n_in - 1
        f[last], s[last] = 0, n_in - 1
        w0 = np.rint((np.float32(1) - f) * 2048).astype(np.int64)
        w1 = np.rint(f * 2048).astype(np.int64)
        return s, np.minimum(s + 1, n_in - 1), w0, w1

    x = img.astype(np.int64)
    xs0, xs1, a0, a1 = taps(img.shape[1], out_w)
    rows = x[:, xs0] * a0[None, :, None] + x[:, xs1] * a1[None, :, None]  # (H, out_w, C)
    ys0, ys1, b0, b1 = taps(img.shape[0], out_h)
    out = rows[ys0] * b0[:, None, None] + rows[ys1] * b1[:, None, None]  # (out_h, out_w, C)
    return np.clip((out + (1 << 21)) >> 22, 0, 255).astype(np.uint8)


def test_cv2_model_is_bilinear():
    """The numpy model agrees with exact bilinear (float, half-pixel centres) to rounding."""
    img = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    assert np.array_equal(cv2_linear(img, 37, 53), img)
    for h, w in ((20, 31), (50, 80), (37, 40)):
        ref = torch.nn.functional.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None].double(),
                                              size=(h, w), mode="bilinear", align_corners=False)
        ref = ref[0].permute(1, 2, 0).numpy()
        assert np.abs(cv2_linear(img, h, w) - ref).max() <= 0.75


@pytest.mark.parametrize("width,height", [(320, 240), (240, 320)])
def test_resized_view_pixels_match_opencv_bilinear(tmp_path, width, height):
    """A 320 x 240 video (and its portrait twin) at 224: the short side to 224, the long one
    to int(224 * 320 / 240) = 298, crops at 0, 37, 74 along it; every pixel within one grey
    level of the OpenCV model. Why one level: both give integers near the exact bilinear
    value, the model within 0.75 of it (11-bit weights, one final rounding), PyTorch's uint8
    kernel within 1.0 (it rounds after each of its two passes, so about a fifth of the
    pixels land one level from OpenCV's), hence less than 2 apart."""
    path = make_video(tmp_path / "v.mp4", num_frames=40, width=width, height=height)
    full = decode_all(path).numpy()  # (40, H, W, 3)
    ds = VideoDataset([("v.mp4", 0)], root=tmp_path, mode="test", num_frames=8, sampling_rate=4,
                      img_size=224, num_clips=2, num_crops=3)
    views, _, _ = ds[0]
    clips = authors_dense_test(40, 8, 4, 2)
    out_h, out_w = TR.short_side_size(height, width, 224)
    assert (out_h, out_w) == ((224, 298) if width > height else (298, 224))
    worst = 0.0
    for v in range(6):
        k, c = divmod(v, 3)
        top, left = authors_view_box(height, width, 224, 3, c)
        assert (top, left) == ((0, [0, 37, 74][c]) if width > height else ([0, 37, 74][c], 0))
        ref = np.stack([cv2_linear(full[i], out_h, out_w)[top:top + 224, left:left + 224]
                        for i in clips[k]])  # (T, 224, 224, 3)
        got = ((views[v] * STD + MEAN) * 255).permute(1, 2, 3, 0).numpy()  # (T, 224, 224, 3)
        worst = max(worst, float(np.abs(got - ref).max()))
    assert worst <= 1 + 1e-3, worst


# ------------------------------------------------------------------ too short
def test_too_short_is_where_views_repeat_frames(tmp_path, capsys):
    """check-videos' "too short" is the sampler's min_frames: one frame less and the test
    view repeats a frame, at min_frames it does not; --config gives the clip shape."""
    for n in (12, 13, 16):
        make_video(tmp_path / f"n{n}.mp4", num_frames=n)
    (tmp_path / "list.csv").write_text("n12.mp4 0\nn13.mp4 1\nn16.mp4 0\n")
    for sampling, T, r in (("dense", 4, 4), ("segment", 13, 2)):
        ds = VideoDataset([("n12.mp4", 0)], mode="test", num_frames=T, sampling_rate=r,
                          sampling=sampling, num_clips=2)
        assert ds.min_frames == 13 == S.min_frames(T, r, sampling)
        for n in (12, 13):
            repeats = any(len(set(c)) < T for c in ds.clip_indices(n, 0))
            assert repeats == (n < ds.min_frames), (sampling, n)
        cfg = tmp_path / f"{sampling}.yaml"
        cfg.write_text(f"data:\n  num_frames: {T}\n  sampling_rate: {r}\n  sampling: {sampling}\n"
                       f"  root: {tmp_path}\n")
        assert main(["check-videos", str(tmp_path / "list.csv"), "--config", str(cfg),
                     "--json", "--no-progress"]) == 1
        rep = json.loads(capsys.readouterr().out)
        assert rep["min_frames"] == 13 and rep["clip"]["sampling"] == sampling
        assert [p["path"].rsplit("/", 1)[1] for p in rep["problems"]["too_short"]] == ["n12.mp4"]
    # a flag overrides the file: 16 x 4 dense needs 61 frames
    assert main(["check-videos", str(tmp_path / "list.csv"), "--config", str(tmp_path / "dense.yaml"),
                 "--num-frames", "16", "--json", "--no-progress"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["min_frames"] == 61 and len(rep["problems"]["too_short"]) == 3
