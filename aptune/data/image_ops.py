"""PIL's image operations as RandAugment uses them, restated in torch and batched over views.

Every function takes x: float (N, T, C, H, W) holding whole numbers 0..255 (uint8 values, kept in
float so that a chain of ops stays on the device) and per-view arguments, and returns the same layout.
Each op works frame by frame, as PIL does on one image: statistics (histograms, means, extremes) are
per frame and channel. The arithmetic follows Pillow's C code step by step so that results are equal to
PIL's, not merely close: float32 where Pillow computes in float (blend, 3x3 filter), float64 where it
computes in double (affine resampling, autocontrast), integers where it uses integers (greyscale,
histograms), truncation where it casts to UINT8.

    blend(degenerate, image, f)   Image.blend: trunc(deg + f * (image - deg)), clipped    (ImageEnhance.*)
    grey(x)                       convert("L"): (19595 R + 38470 G + 7471 B + 2^15) >> 16
    smooth(x)                     filter(SMOOTH): 3x3 kernel [1 1 1; 1 5 1; 1 1 1] / 13, border copied
    autocontrast(x), equalize(x)  ImageOps (per-channel lookup tables)
    affine_bicubic(x, coeffs)     Image.transform(AFFINE, BICUBIC, fillcolor): PIL's cubic (a = -1)
"""
from __future__ import annotations

import torch

F32 = torch.float32
F64 = torch.float64


def _per_view(values, x: torch.Tensor, dtype=F32) -> torch.Tensor:
    """A list of per-view numbers -> tensor (N, 1, 1, 1, 1) on x's device (dtype rounding as C's cast)."""
    return torch.tensor(values, dtype=dtype, device=x.device).view(-1, 1, 1, 1, 1)


def blend(degenerate: torch.Tensor, image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Image.blend(degenerate, image, factor): float32 `deg + f * (img - deg)`, truncated, clipped to 0..255
    (f = 0 and f = 1 give deg and img exactly, as Pillow's shortcuts)."""
    return (degenerate + factor * (image - degenerate)).trunc_().clamp_(0, 255)


def grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma in Pillow's fixed point: (N, T, 3, H, W) -> (N, T, 1, H, W)."""
    r, g, b = x.to(torch.int32).unbind(2)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).unsqueeze(2).to(x.dtype)


def smooth(x: torch.Tensor) -> torch.Tensor:
    """ImageFilter.SMOOTH: float32 sums in Pillow's order (row below, row, row above; left to right),
    +0.5 and truncation; the outer rows and columns are copied."""
    H, W = x.shape[-2:]
    if H < 3 or W < 3:
        return x.clone()
    one = torch.tensor(1.0, dtype=F32, device=x.device)
    k1, k5 = one / 13.0, one * 5.0 / 13.0                    # Pillow divides the float kernel by 13
    out = x.clone()
    ss = torch.full_like(x[..., 1:-1, 1:-1], 0.5)
    for rows, centre in ((x[..., 2:, :], k1), (x[..., 1:-1, :], k5), (x[..., :-2, :], k1)):
        left, mid, right = rows[..., :-2], rows[..., 1:-1], rows[..., 2:]
        ss = ss + ((left * k1 + mid * centre) + right * k1)
    out[..., 1:-1, 1:-1] = ss.clamp_(0, 255).trunc_()
    return out


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """ImageOps.autocontrast (cutoff 0): per frame and channel, int(v * 255 / (hi - lo) - lo * scale) in
    double, clipped; a channel with hi <= lo is left as it is."""
    lo = x.amin(dim=(-2, -1), keepdim=True).to(F64)
    hi = x.amax(dim=(-2, -1), keepdim=True).to(F64)
    span = hi - lo
    scale = torch.full_like(span, 255.0) / span.clamp_min(1)     # not 255.0 / t (a reciprocal, then a product)
    offset = -lo * scale
    out = (x.to(F64) * scale + offset).trunc_().clamp_(0, 255)
    return torch.where(span > 0, out, x.to(F64)).to(x.dtype)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """ImageOps.equalize: per frame and channel, step = (pixels - count of the top used level) // 255,
    lut[i] = (step // 2 + pixels below i) // step (clipped to 255); identity when one level or step 0."""
    shape = x.shape
    flat = x.reshape(-1, shape[-2] * shape[-1]).long()                     # (M, HW)
    hist = torch.zeros(flat.shape[0], 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat))
    used = hist > 0
    top = 255 - used.flip(1).long().argmax(1, keepdim=True)                # highest used level
    step = (hist.sum(1, keepdim=True) - hist.gather(1, top)) // 255
    below = hist.cumsum(1) - hist                                          # pixels under level i
    lut = ((step // 2 + below) // step.clamp_min(1)).clamp_(max=255)
    keep = (used.sum(1, keepdim=True) <= 1) | (step == 0)
    lut = torch.where(keep, torch.arange(256, device=x.device).expand_as(lut), lut)
    return lut.gather(1, flat).to(x.dtype).reshape(shape)


def _cubic(v1, v2, v3, v4, d):
    """Pillow's BICUBIC macro (cubic convolution with a = -1), same operation order, float64."""
    p2 = -v1 + v3
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    return v2 + d * (p2 + d * (p3 + d * p4))


def affine_bicubic(x: torch.Tensor, coeffs: list[list[float]], fill: float = 128.0) -> torch.Tensor:
    """Image.transform(size, AFFINE, coeffs, BICUBIC, fillcolor=fill) per view: the output pixel centre
    (x + .5, y + .5) maps to (a x + b y + c, d x + e y + f) in the input; outside the input -> fill;
    else 4 x 4 neighbours (indices clamped to the image) and PIL's cubic, truncated to 0..255.
    A group whose fractional offsets are all 0 along one axis (shears, translations) reads only the
    neighbours along the other: PIL's cubic at offset 0 returns its second value exactly."""
    N, T, C, H, W = x.shape
    dev = x.device
    a = torch.tensor(coeffs, dtype=F64, device=dev).view(N, 6, 1, 1)
    xs = torch.arange(W, dtype=F64, device=dev).add_(0.5).view(1, 1, W)
    ys = torch.arange(H, dtype=F64, device=dev).add_(0.5).view(1, H, 1)
    xin = a[:, 0] * xs + a[:, 1] * ys + a[:, 2]                              # (N, H, W)
    yin = a[:, 3] * xs + a[:, 4] * ys + a[:, 5]
    inside = (xin >= 0) & (xin < W) & (yin >= 0) & (yin < H)
    xin, yin = xin - 0.5, yin - 0.5
    x0, y0 = xin.floor(), yin.floor()
    dx, dy = (xin - x0).view(-1, 1), (yin - y0).view(-1, 1)                  # (N*H*W, 1)
    base = torch.arange(N, device=dev).view(N, 1, 1) * (H * W)
    cols = [(x0 + (k - 1)).clamp_(0, W - 1).long() for k in range(4)]
    rows = [(y0 + (k - 1)).clamp_(0, H - 1).long() * W + base for k in range(4)]
    src = x.permute(0, 3, 4, 1, 2).reshape(N * H * W, T * C)                 # one row of T*C values per pixel
    fill_v = torch.tensor(fill, dtype=F64, device=dev)
    out = torch.empty(N * H * W, T * C, dtype=x.dtype, device=dev)
    use_x, use_y = bool(dx.any()), bool(dy.any())
    step = N * H * W if dev.type == "cuda" else 1024                         # CPU: chunks that stay in cache
    for s in range(0, N * H * W, step):
        part = slice(s, s + step)

        def along_x(r):                                                      # (rows, T*C) float64
            taps = [src[(r.view(-1)[part] + c.view(-1)[part])] for c in (cols if use_x else cols[1:2])]
            return _cubic(*(t.to(F64) for t in taps), dx[part]) if use_x else taps[0].to(F64)
        v = _cubic(*(along_x(r) for r in rows), dy[part]) if use_y else along_x(rows[1])
        out[part] = torch.where(inside.view(-1, 1)[part], v.clamp_(0, 255).trunc_(), fill_v)
    return out.view(N, H, W, T, C).permute(0, 3, 4, 1, 2)
