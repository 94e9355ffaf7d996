"""CPU post-processing at network resolution: labels, confidence and class probability upsampled cheaply.

Today's reference (``postprocess_torch``) bilinear-resizes all C logit channels to the output size and
takes the argmax there: C floats per output pixel. Here the argmax is taken at network resolution and
only the pixels whose four bilinear source samples disagree (a thin band along label boundaries) are
decided from interpolated logits:

* the four corners of a cell agree on label k: bilinear weights are a convex combination, so k stays
  the argmax in the whole cell (exact, no arithmetic);
* the corners hold two labels a, b: the pixel takes a or b by the sign of the interpolated logit
  difference l_a - l_b (one channel instead of C; a third class can win only where neither a nor b
  leads at any corner, which the agreement test on real frames shows is rare);
* three or more labels: all C logits are interpolated at those pixels.

Confidence and class probability are computed at network resolution and the single-channel map is
upsampled (bilinear, uint8 when only a mono8 image is published); along the band the class-probability map
is clamped to the label probability so it never contradicts the mask.
"""
from __future__ import annotations

import cv2
import numpy as np

TWO, MANY = 255, 254   # cell markers in the label grid; class ids must stay below MANY
MAX_CLASSES = MANY
BLOCK_TABLE_MAX = 2 << 20   # entries of the cached per-cell block table (intp: 16 MB; 640x480 output: 2.7 MB)


def _axis(n_out: int, n_valid: int, n_low: int, n_cover: int) -> tuple[np.ndarray, np.ndarray]:
    """Source sample (index, weight) per output pixel; half-pixel centres like cv2/align_corners=False."""
    s = np.clip((np.arange(n_out) + 0.5) * (n_valid / n_out) * (n_low / n_cover) - 0.5, 0, n_low - 1)
    i0 = np.floor(s).astype(np.int64)
    return i0, (s - i0).astype(np.float32)


class Upsampler:
    """Geometry of one (logits size, valid size, output size): index maps cached across frames.

    Args:
        low_hw: (h, w) of the logits.
        valid_hw: unpadded network input size (the part of the input that is image).
        out_hw: output size.
        net_hw: padded network input size, which the logits cover.
    """

    def __init__(self, low_hw, valid_hw, out_hw, net_hw):
        self.key = (tuple(low_hw), tuple(valid_hw), tuple(out_hw), tuple(net_hw))
        h, w = map(int, low_hw)
        H, W = map(int, out_hw)
        self.low_hw, self.out_hw = (h, w), (H, W)
        # logits already at the output size (output stride 1, nothing cropped): no interpolation at all
        self.identity = (h, w) == (H, W) and tuple(valid_hw) == tuple(net_hw)
        self.y0, self.wy = _axis(H, valid_hw[0], h, net_hw[0])
        self.x0, self.wx = _axis(W, valid_hw[1], w, net_hw[1])
        self.rows, self.cols = np.bincount(self.y0, minlength=h), np.bincount(self.x0, minlength=w)
        # the same sampling as an affine map (output -> source), for cv2.warpAffine when padding is cropped
        sy, sx = (valid_hw[0] / H) * (h / net_hw[0]), (valid_hw[1] / W) * (w / net_hw[1])
        self.affine = None if tuple(valid_hw) == tuple(net_hw) else \
            np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]])
        # Each cell's output pixels as an (R, C) block (R, C: the most rows/columns a cell covers; spare
        # entries -1), and their bilinear weights per block row/column: a boundary cell is then decided with
        # broadcasting, not per-pixel gathers, and nothing of output size is kept.
        R, C = max(1, int(self.rows.max())), max(1, int(self.cols.max()))
        oy = np.concatenate([[0], np.cumsum(self.rows)[:-1]])[:, None] + np.arange(R)
        ox = np.concatenate([[0], np.cumsum(self.cols)[:-1]])[:, None] + np.arange(C)
        ok_y, ok_x = np.arange(R) < self.rows[:, None], np.arange(C) < self.cols[:, None]
        self._oy, self._ox = np.where(ok_y, oy, -1), np.where(ok_x, ox, -1)                  # (h, R), (w, C)
        self._fy = np.where(ok_y, self.wy[np.minimum(oy, H - 1)], 0).astype(np.float32)   # (h, R)
        self._fx = np.where(ok_x, self.wx[np.minimum(ox, W - 1)], 0).astype(np.float32)   # (w, C)
        # every cell's block, built on the first frame with a boundary when small enough (False: never)
        self._all_blocks = None if h * w * R * C <= BLOCK_TABLE_MAX else False
        # The first and last cells of an axis also cover the pixels whose samples are clamped at the border
        # (10 rows instead of 7 at 640x480): the other cells are decided in blocks of their own, smaller
        # size (7x7, not 10x10), which halves the band's work.
        inner_r = int(self.rows[1:-1].max()) if h > 2 else R
        inner_c = int(self.cols[1:-1].max()) if w > 2 else C
        self._inner_rc = (inner_r, inner_c)
        self._inner = ((self.rows <= inner_r)[:, None] & (self.cols <= inner_c)[None, :]).ravel()   # per cell
        # Cells no output pixel samples (beyond the valid part of a padded input, or skipped when shrinking)
        # are left out of the band: in the first row or column they would otherwise be decided in full blocks
        # (a 1x1 frame shown at 640x480: 15 empty 480x640 blocks, 0.8 s and 400 MB of interpolated logits).
        empty = (self.rows == 0)[:, None] | (self.cols == 0)[None, :]
        self._empty = empty if empty.any() else None
        # the boundary band of the last ``labels`` call: per part (blocks, cells, block labels, la, lb); la/lb
        # are each cell's two labels for two-label cells, None for cells decided from all logits
        self._band: list[tuple] = []

    def _groups(self, cells: np.ndarray):
        """``cells`` split into (cells, (R, C)) groups by the block size they need: inner cells, then edge cells."""
        full = self._fy.shape[1], self._fx.shape[1]
        if self._inner_rc == full:
            return [(cells, full)]
        inner = self._inner[cells]
        return [(part, rc) for part, rc in ((cells[inner], self._inner_rc), (cells[~inner], full)) if part.size]

    def _blocks(self, cells: np.ndarray, rc) -> np.ndarray:
        """(n, R, C) flat output pixels of ``cells`` for blocks of ``rc`` = (R, C); spare entries point one past
        the end (a sentinel). A table of all cells' blocks is built once when it is small, so a frame gathers
        rows of it instead of computing (n, R, C) indices (intp: numpy would convert narrower indices on
        every scatter)."""
        if self._all_blocks is None:
            self._all_blocks = self._compute_blocks(np.arange(self.low_hw[0] * self.low_hw[1]))
        if self._all_blocks is False:
            return self._compute_blocks(cells)[:, :rc[0], :rc[1]]
        return self._all_blocks[cells, :rc[0], :rc[1]]

    def _compute_blocks(self, cells: np.ndarray) -> np.ndarray:
        H, W = self.out_hw
        w = self.low_hw[1]
        oy, ox = self._oy[cells // w][:, :, None], self._ox[cells % w][:, None, :]
        return np.where((oy >= 0) & (ox >= 0), oy * W + ox, H * W)

    def labels(self, scores: np.ndarray) -> np.ndarray:
        """(h, w, C) float32 logits -> (H, W) uint8 argmax of the bilinearly upsampled logits."""
        h, w, c = scores.shape
        lab = scores.argmax(2).astype(np.uint8)
        self._band = []
        if self.identity:
            return lab
        c01, c10, c11 = (np.empty_like(lab) for _ in range(3))   # right, lower, diagonal neighbours
        c01[:, :-1], c01[:, -1] = lab[:, 1:], lab[:, -1]          # edge-clamped, as the sampling is
        c10[:-1], c10[-1] = lab[1:], lab[-1]
        c11[:-1], c11[-1] = c01[1:], c01[-1]
        c00 = lab
        other = np.where(c01 != c00, c01, np.where(c10 != c00, c10, c11))   # a second label, if any
        uniform = (c01 == c00) & (c10 == c00) & (c11 == c00)
        two = ((c01 == c00) | (c01 == other)) & ((c10 == c00) | (c10 == other)) & ((c11 == c00) | (c11 == other))
        grid = np.where(uniform, lab, np.where(two, TWO, MANY)).astype(np.uint8)
        if self._empty is not None:
            grid[self._empty] = 0   # no pixels to decide (np.repeat below drops these cells)
        H, W = self.out_hw
        out = np.empty(H * W + 1, np.uint8)   # + the sentinel the spare block entries write to
        out[:-1].reshape(H, W)[...] = np.repeat(np.repeat(grid, self.cols, 1), self.rows, 0)
        if not (grid >= MANY).any():
            return out[:-1].reshape(H, W)
        flat, gflat = scores.reshape(h * w, c), grid.ravel()
        for cells, (R, C) in self._groups(np.flatnonzero(gflat == MANY)):
            # all classes' logits, interpolated over each cell's (R, C) block
            gx, gy = self._fx[cells % w][:, :C, None], self._fy[cells // w][:, :R, None, None]
            c00, c01, c10, c11 = (flat[q][:, None, :] for q in self._corners(cells, h, w))
            top = c00 * (1 - gx) + c01 * gx                                           # (n, C, classes)
            bot = c10 * (1 - gx) + c11 * gx
            blocks = self._blocks(cells, (R, C))
            label = (top[:, None] + (bot - top)[:, None] * gy).argmax(3).astype(np.uint8)   # (n, R, C)
            out[blocks] = label
            self._band.append((blocks, cells, label, None, None))
        for cells, (R, C) in self._groups(np.flatnonzero(gflat == TWO)):
            # l_a - l_b at the four corners of each cell, interpolated over the cell's block of pixels
            la, lb = lab.ravel()[cells], other.ravel()[cells]
            d00, d01, d10, d11 = ((flat[q, la] - flat[q, lb])[:, None] for q in self._corners(cells, h, w))
            gx, gy = self._fx[cells % w][:, :C], self._fy[cells // w][:, :R, None]   # (n, C), (n, R, 1)
            top = d00 + (d01 - d00) * gx
            bot = d10 + (d11 - d10) * gx
            d = top[:, None, :] + (bot - top)[:, None, :] * gy
            label = lb[:, None, None] + (la - lb)[:, None, None] * (d > 0)   # uint8 wraps back to la: 10x np.where
            tie = d == 0
            if tie.any():   # argmax keeps the first of tied classes
                label = np.where(tie, np.minimum(la, lb)[:, None, None], label)
            blocks = self._blocks(cells, (R, C))
            out[blocks] = label
            self._band.append((blocks, cells, label, la, lb))
        return out[:-1].reshape(H, W)

    @staticmethod
    def _corners(cells: np.ndarray, h: int, w: int):
        """Flat indices of the four source samples of each cell (clamped at the last row/column)."""
        down = np.where(cells < (h - 1) * w, w, 0)
        right = (cells % w < w - 1).astype(cells.dtype)
        return cells, cells + right, cells + down, cells + down + right

    def chosen_prob(self, probs: np.ndarray, u8: bool, band_values: list) -> np.ndarray:
        """(C, h, w) probabilities -> each output pixel's label probability, bilinear from network
        resolution (``band_values`` of the same probabilities). Inside uniform cells that is the top
        probability; along boundaries the label's own probability is interpolated, so confidence dips
        there as the reference's does."""
        top = probs.max(0)
        out = self._smooth_into(to_u8(top) if u8 else top)
        for (blocks, *_), v in zip(self._band, band_values):
            out[blocks] = to_u8(v) if u8 else v
        return out[:-1].reshape(self.out_hw)

    def band_values(self, probs: np.ndarray) -> list[np.ndarray]:
        """Per band part, the (n, R, C) probability of each pixel's label, interpolated from the corners of
        its cell (spare block entries hold values that are written to the sentinel only). Two-label cells
        interpolate their two classes per cell, not per pixel: 4 gathers per cell instead of per pixel."""
        c, h, w = probs.shape
        flat = probs.reshape(-1)
        values = []
        for blocks, cells, label, la, lb in self._band:
            R, C = blocks.shape[1:]
            fx, fy = self._fx[cells % w][:, None, :C], self._fy[cells // w][:, :R, None]   # (n, 1, C), (n, R, 1)
            corners = self._corners(cells, h, w)
            if la is None:   # any label: gather per pixel
                base = label.astype(np.intp) * (h * w)
                v = self._bilinear(*(flat[base + q[:, None, None]] for q in corners), fx, fy)
            else:
                va = self._bilinear(*(flat[la.astype(np.intp) * (h * w) + q][:, None, None] for q in corners), fx, fy)
                vb = self._bilinear(*(flat[lb.astype(np.intp) * (h * w) + q][:, None, None] for q in corners), fx, fy)
                v = np.where(label == la[:, None, None], va, vb)
            values.append(np.maximum(v, np.float32(1.0 / c)))   # a top class has >= 1/C
        return values

    @staticmethod
    def _bilinear(v00, v01, v10, v11, fx, fy):
        t = v00 + (v01 - v00) * fx
        return t + (v10 + (v11 - v10) * fx - t) * fy

    def class_map(self, probs: np.ndarray, k: int, band_values: list) -> np.ndarray:
        """(H, W) probability of class ``k``, bilinear; in the boundary band it is kept consistent with
        the mask: the label's own class gets the label probability, no other class exceeds it (separately
        interpolated maps would let a class outrank the one the mask chose)."""
        out = self._smooth_into(probs[k])
        for (blocks, _, label, *_), v in zip(self._band, band_values):
            out[blocks] = np.where(label == k, v, np.minimum(out[blocks], v))
        return out[:-1].reshape(self.out_hw)

    def _smooth_into(self, low: np.ndarray) -> np.ndarray:
        """``smooth`` into a flat buffer with one spare element: the sentinel spare block entries write to."""
        H, W = self.out_hw
        out = np.empty(H * W + 1, low.dtype)
        self.smooth(low, out[:-1].reshape(H, W))
        return out

    def smooth(self, low: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
        """(h, w) map (uint8 or float32) -> (H, W) bilinear, same sampling as ``labels`` (into ``dst``)."""
        size = (self.out_hw[1], self.out_hw[0])
        if self.affine is None:
            return cv2.resize(low, size, dst, interpolation=cv2.INTER_LINEAR)
        return cv2.warpAffine(low, self.affine, size, dst, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)


def probabilities(up: Upsampler, logits: np.ndarray, want_confidence: bool, class_prob: int | None, u8: bool):
    """(C, h, w) logits -> (confidence, probability of ``class_prob``) at the output size, consistent with the
    labels of the last ``up.labels`` call (of the same logits): softmax at network resolution, then
    ``chosen_prob`` / ``smooth``; confidence uint8 when ``u8``, else float32.
    Channels first: the reductions over classes are then element-wise across planes (5x faster)."""
    exp = np.exp(logits - logits.max(0))
    total = exp.sum(0)
    conf = prob = None
    if up.identity:   # no upsampling: the top class's probability is 1 / sum(exp(l - max))
        if want_confidence:
            conf = to_u8(1.0 / total) if u8 else (1.0 / total).astype(np.float32)
        if class_prob is not None:
            prob = (exp[class_prob] / total).astype(np.float32)
        return conf, prob
    exp /= total
    band = up.band_values(exp)
    if want_confidence:
        conf = up.chosen_prob(exp, u8, band)
    if class_prob is not None:
        prob = up.class_map(exp, class_prob, band)
    return conf, prob


def to_u8(prob: np.ndarray) -> np.ndarray:
    """Probability in [0, 1] -> uint8 0..255, rounded (the mono8 confidence encoding)."""
    return np.clip(prob * 255.0 + 0.5, 0, 255).astype(np.uint8)
