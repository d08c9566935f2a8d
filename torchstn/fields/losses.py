"""The losses and regularisers of learned registration, for images and volumes.

Similarity of a warped moving image and a fixed image (:func:`mse_loss`, :func:`ncc`,
:func:`ncc_loss`), overlap of label maps (:func:`dice`, :func:`soft_dice_loss`) and smoothness
of a displacement field (:func:`diffusion_loss`, :func:`bending_energy`). Images are
``(B, C, H, W)`` or ``(B, C, D, H, W)``; fields follow the convention of
:mod:`torchstn.fields.field` (``(B, N, *spatial)`` in pixels). Every loss is differentiable and
returns a scalar; :func:`ncc` returns one value per sample and :func:`dice` one per sample and
class, for metrics.

Each docstring says how its numbers relate to VoxelMorph's (``voxelmorph.torch.losses``) and
MONAI's (``monai.losses``) versions of the same loss, so that a pipeline moved from either keeps
its loss weights.

Example:
    >>> from torchstn import fields
    >>> fixed = torch.rand(2, 1, 16, 16)
    >>> u = torch.zeros(2, 2, 16, 16, requires_grad=True)
    >>> moved = fields.warp(fixed, u)
    >>> loss = ncc_loss(moved, fixed, window=9) + 0.01 * diffusion_loss(u)
    >>> loss.backward()
    >>> round(loss.item(), 4)  # identical images, a zero field
    0.0
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .._checks import check_positive, check_tensor
from ..errors import InvalidInputError
from .field import check_field

__all__ = [
    "bending_energy",
    "dice",
    "diffusion_loss",
    "mse_loss",
    "ncc",
    "ncc_loss",
    "soft_dice_loss",
]

#: VoxelMorph's local window (9 pixels/voxels along every axis), used for ``window="local"``.
LOCAL_WINDOW = 9


def _check_images(a: Any, b: Any, name_a: str = "a", name_b: str = "b") -> int:
    """Check a pair of ``(B, C, *spatial)`` images of one shape; returns the spatial rank."""
    check_tensor(a, name_a, ndim=(4, 5))
    check_tensor(b, name_b, ndim=(4, 5))
    if a.shape != b.shape:
        raise InvalidInputError(
            f"{name_b}: expected the shape of {name_a} {tuple(a.shape)}, got {tuple(b.shape)}"
        )
    if a.device != b.device:
        raise InvalidInputError(f"{name_b} is on {b.device} but {name_a} is on {a.device}")
    return a.dim() - 2


def mse_loss(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference of two images, optionally weighted by a mask.

    ``sum(m * (a - b)**2) / sum(m)`` over every batch, channel and pixel, with ``m`` the mask
    broadcast to ``a``'s shape (all ones without a mask: the plain mean, as ``F.mse_loss``,
    VoxelMorph's ``MSE`` and MONAI's use of ``torch.nn.MSELoss``). An all-zero mask gives 0.

    Args:
        a: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` images, e.g. the warped moving image.
        b: the same shape, e.g. the fixed image.
        mask: weights (boolean or non-negative float) of ``a``'s rank, each dimension equal to
            ``a``'s or 1, e.g. ``(B, 1, *spatial)`` for a region of interest.

    Returns:
        A scalar.

    Example:
        >>> a, b = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 2.0], [0.0, 0.0]]]])
        >>> mse_loss(a, b), mse_loss(a, b, mask=torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]))
        (tensor(1.2500), tensor(1.))
    """
    _check_images(a, b)
    sq = (a - b).square()
    if mask is None:
        return sq.mean()
    check_tensor(mask, "mask", floating=False)
    if mask.dim() != a.dim() or any(m not in (1, s) for m, s in zip(mask.shape, a.shape)):
        raise InvalidInputError(
            f"mask: expected a shape that broadcasts to a's {tuple(a.shape)} (same rank, each "
            f"size equal or 1), got {tuple(mask.shape)}"
        )
    if mask.device != a.device:
        raise InvalidInputError(f"mask is on {mask.device} but a is on {a.device}")
    m = mask.to(sq.dtype).expand_as(sq)
    return (m * sq).sum() / m.sum().clamp_min(torch.finfo(sq.dtype).tiny)


def _window(window: Any, n: int) -> tuple[int, ...]:
    """The local window as one odd size per spatial axis (``"local"``: VoxelMorph's 9)."""
    if isinstance(window, str) and window == "local":
        return (LOCAL_WINDOW,) * n
    sizes = (window,) * n if isinstance(window, int) else window
    try:
        if isinstance(sizes, (str, bytes)) or any(isinstance(s, (bool, str)) for s in sizes):
            raise TypeError
        values = tuple(int(s) for s in sizes)
        ok = len(values) == n and all(float(s) == v for s, v in zip(sizes, values))
    except (TypeError, ValueError, OverflowError):
        ok, values = False, ()
    if not ok or any(v < 3 or v % 2 == 0 for v in values):
        raise InvalidInputError(
            f"window: expected None (global), 'local' ({LOCAL_WINDOW}) or an odd size >= 3 "
            f"(one int, or one per each of the {n} spatial axes), got {window!r}"
        )
    return values


def _box_sums(x: torch.Tensor, window: tuple[int, ...]) -> torch.Tensor:
    """Sums of ``x`` ``(B, C, *spatial)`` over the window centred on every pixel, the image
    zero-padded: separable, one 1-D box average per axis (padding counted), times the window's
    size (several times faster than a ``ones`` convolution, forward and backward)."""
    n = len(window)
    pool = F.avg_pool2d if n == 2 else F.avg_pool3d
    out = x
    for axis, w in enumerate(window):
        kernel, padding = [1] * n, [0] * n
        kernel[axis], padding[axis] = w, w // 2
        if out.shape[2 + axis] < w:  # the pools refuse a window longer than the axis: pad first
            pad = [0] * (2 * n)
            pad[2 * (n - 1 - axis)] = pad[2 * (n - 1 - axis) + 1] = w // 2
            out, padding[axis] = F.pad(out, pad), 0
        out = pool(out, tuple(kernel), stride=1, padding=tuple(padding), count_include_pad=True)
    return out * math.prod(window)


def ncc(
    a: torch.Tensor,
    b: torch.Tensor,
    window: int | Sequence[int] | str | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Normalised cross-correlation of two images per sample: global (Pearson) or local
    (VoxelMorph's windowed squared NCC). 1 means identical up to an affine change of
    intensities (global) or up to a scaling of them (local: the zero padding at the border does
    not follow an offset).

    Each channel is scored on its own and the channels averaged. With window sums
    ``S_a = sum(a)``, ``S_aa = sum(a**2)``, ``S_ab = sum(a*b)`` over ``n`` pixels, define
    ``cross = S_ab - S_a*S_b/n``, ``var_a = S_aa - S_a**2/n`` (clamped at 0 against rounding),
    ``var_b`` alike (``n`` times the covariance and the variances):

    * ``window=None``, global: the sums run over the whole image of one sample and channel and
      ``r = cross / sqrt(var_a * var_b + eps)``, Pearson's correlation in ``[-1, 1]``: negative
      for inverted contrast, 0 when either image is constant.
    * ``window`` set, local: the sums run over a box of ``window`` pixels centred on every
      pixel, the images zero-padded (windows at the border count the zeros and divide by the
      full ``n``), and ``cc = cross**2 / (var_a * var_b + eps)`` in ``[0, 1]``, averaged over
      the pixels. This is VoxelMorph's ``NCC(win)`` statistic exactly (its ``-cc`` loss is
      ``-ncc``, with the same ``eps=1e-5`` added to the product of the window sums), and MONAI's
      ``LocalNormalizedCrossCorrelationLoss(kernel_size=window, kernel_type="rectangular")``
      up to its eps (``smooth_dr`` clamps each variance from below instead of adding to the
      product): the two agree wherever both images vary inside the window. A window where
      either image is constant scores 0 in all three.

    The box sums are separable (one 1-D box filter per axis).

    Args:
        a: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` images, floating point.
        b: the same shape.
        window: ``None`` for the global version; an odd size ``>= 3`` (one int for every axis
            or one per axis in ``(H, W)`` / ``(D, H, W)`` order) or ``"local"`` (VoxelMorph's
            default, 9) for the local one.
        eps: added to the product of the variance sums; keeps the gradient finite on constant
            images. Its weight falls with the number of pixels summed (global) and the window
            size (local), as in VoxelMorph.

    Returns:
        ``(B,)``, the correlation of each sample; float32 for half-precision inputs. The sums
        are computed in float32 at least, with autocast off (they cancel in half precision).

    Example:
        >>> a = torch.rand(2, 1, 12, 12)
        >>> ncc(a, 3 * a + 1).round(decimals=4), ncc(a, -a).round(decimals=4)
        (tensor([1., 1.]), tensor([-1., -1.]))
        >>> ncc(a, a, window=5).shape
        torch.Size([2])
    """
    n = _check_images(a, b)
    eps = check_positive(eps, "eps", allow_zero=True)
    sizes = None if window is None else _window(window, n)
    with _full_precision(a.device):
        work = torch.promote_types(a.dtype, torch.float32)
        return _ncc(a.to(work), b.to(work), sizes, eps)


def _full_precision(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Autocast off: the window sums cancel (``S_aa - S_a**2 / n``), which half precision
    cannot afford."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _ncc(
    a: torch.Tensor, b: torch.Tensor, sizes: tuple[int, ...] | None, eps: float
) -> torch.Tensor:
    """:func:`ncc` of checked inputs; ``sizes`` None for the global version."""
    n = a.dim() - 2
    if sizes is None:
        a_c = a - a.mean(dim=tuple(range(2, n + 2)), keepdim=True)
        b_c = b - b.mean(dim=tuple(range(2, n + 2)), keepdim=True)
        cross = (a_c * b_c).flatten(2).sum(-1)
        var_a = a_c.square().flatten(2).sum(-1)
        var_b = b_c.square().flatten(2).sum(-1)
        return (cross / (var_a * var_b + eps).sqrt()).mean(1)
    count = math.prod(sizes)
    channels = a.shape[1]
    stacked = torch.cat([a, b, a * a, b * b, a * b], dim=1)  # one pass for the five sums
    s_a, s_b, s_aa, s_bb, s_ab = _box_sums(stacked, sizes).split(channels, dim=1)
    cross = s_ab - s_a * s_b / count
    var_a = (s_aa - s_a * s_a / count).clamp_min(0)
    var_b = (s_bb - s_b * s_b / count).clamp_min(0)
    cc = cross.square() / (var_a * var_b + eps)
    return cc.flatten(1).mean(-1)


def ncc_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    window: int | Sequence[int] | str | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``1 - mean(ncc(a, b, window, eps))``: 0 for a perfect match, a scalar to minimise.

    Arguments as :func:`ncc`. Local (``window`` set): in ``[0, 1]``, and ``1 +`` VoxelMorph's
    ``NCC(win).loss`` (which is ``-mean(cc)``, in ``[-1, 0]``) and ``1 +`` MONAI's
    ``LocalNormalizedCrossCorrelationLoss`` (also ``-mean``, see :func:`ncc` for the eps):
    the same gradient, shifted by 1 so that the loss reads as a distance. Global: in
    ``[0, 2]``, 2 for inverted contrast.

    Example:
        >>> a = torch.rand(1, 1, 10, 10)
        >>> float(ncc_loss(a, a)) < 1e-6, float(ncc_loss(a, a, window=3)) < 1e-4
        (True, True)
    """
    return 1 - ncc(a, b, window, eps).mean()


def _check_labels(x: Any, name: str) -> torch.Tensor:
    check_tensor(x, name, floating=False)
    if x.is_floating_point() or x.is_complex() or x.dim() < 2:
        raise InvalidInputError(
            f"{name}: expected an integer label map (B, 1, *spatial) or (B, *spatial), got "
            f"{x.dtype} of shape {tuple(x.shape)}"
        )
    return x


def dice(
    a_labels: torch.Tensor,
    b_labels: torch.Tensor,
    num_classes: int,
    ignore_background: bool = True,
    empty: float = float("nan"),
) -> torch.Tensor:
    """Hard Dice overlap of two integer label maps, per sample and class (a metric, not
    differentiable: use :func:`soft_dice_loss` to train).

    ``dice[b, k] = 2 |A_k ∩ B_k| / (|A_k| + |B_k|)`` with ``A_k`` the pixels of ``a_labels[b]``
    labelled ``k``. A class absent from both maps gets ``empty``: NaN by default (undefined;
    average with :func:`torch.nanmean`), as MONAI's ``DiceMetric(ignore_empty=True)``;
    VoxelMorph's ``py.utils.dice`` gives 0.

    Args:
        a_labels: ``(B, 1, *spatial)`` or ``(B, *spatial)`` integer labels in ``0..K-1``.
        b_labels: the same shape.
        num_classes: ``K``, the number of labels including the background 0.
        ignore_background: drop label 0 (the columns are then labels ``1..K-1``).
        empty: the score of a class absent from both maps.

    Returns:
        ``(B, K - 1)`` with ``ignore_background``, else ``(B, K)``, float32.

    Raises:
        InvalidInputError: float or mismatched label maps, or a label outside ``0..K-1``.

    Example:
        >>> a = torch.tensor([[0, 1, 1, 2]])
        >>> b = torch.tensor([[0, 1, 2, 2]])
        >>> dice(a, b, 3)
        tensor([[0.6667, 0.6667]])
        >>> dice(a, b, 4, ignore_background=False)
        tensor([[1.0000, 0.6667, 0.6667,    nan]])
    """
    _check_labels(a_labels, "a_labels")
    _check_labels(b_labels, "b_labels")
    if a_labels.shape != b_labels.shape:
        raise InvalidInputError(
            f"b_labels: expected the shape of a_labels {tuple(a_labels.shape)}, got "
            f"{tuple(b_labels.shape)}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InvalidInputError(f"num_classes: expected an integer >= 1, got {num_classes!r}")
    if ignore_background and num_classes < 2:
        raise InvalidInputError(
            "num_classes: expected >= 2 with ignore_background (label 0 is dropped), got "
            f"{num_classes}"
        )
    batch = a_labels.shape[0]
    a = a_labels.reshape(batch, -1).long()
    b = b_labels.reshape(batch, -1).long()
    for name, t in (("a_labels", a), ("b_labels", b)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise InvalidInputError(
                f"{name}: expected labels in 0..{num_classes - 1} (num_classes={num_classes}), "
                f"got values in {int(t.min())}..{int(t.max())}"
            )
    k = num_classes
    offset = torch.arange(batch, device=a.device)[:, None] * k  # one bin range per sample

    def counts(x: torch.Tensor) -> torch.Tensor:
        return torch.bincount(x.flatten(), minlength=batch * k).view(batch, k).float()

    same = a == b
    both = counts((a + offset)[same])
    total = counts(a + offset) + counts(b + offset)
    scores = torch.where(total > 0, 2 * both / total.clamp_min(1), torch.full_like(total, empty))
    return scores[:, 1:] if ignore_background else scores


def soft_dice_loss(
    p: torch.Tensor,
    q: torch.Tensor,
    ignore_background: bool = False,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``1 - mean over samples and channels of (2 sum(p*q) + eps) / (sum(p) + sum(q) + eps)``,
    the sums over the pixels of one sample and channel: the differentiable Dice of one-hot or
    probability maps (e.g. warped one-hot labels against the fixed labels).

    The numbers of MONAI's ``DiceLoss(smooth_nr=eps, smooth_dr=eps)`` (its defaults: eps
    ``1e-5``, background included, no softmax, mean reduction). VoxelMorph's ``Dice().loss``
    is ``-mean(2 sum(p*q) / max(sum(p) + sum(q), 1e-5))``: ours minus 1 where both maps have
    mass. A channel empty in both maps scores Dice 1 (loss 0) here, as in MONAI.

    Args:
        p: ``(B, K, H, W)`` or ``(B, K, D, H, W)`` non-negative maps (one channel per class).
        q: the same shape.
        ignore_background: drop channel 0 (off by default: probability maps such as grey and
            white matter often have no background channel).
        eps: the smoothing added to numerator and denominator.

    Returns:
        A scalar in ``[0, 1]``.

    Example:
        >>> onehot = F.one_hot(torch.tensor([[[0, 1], [2, 2]]]), 3).movedim(-1, 1).float()
        >>> float(soft_dice_loss(onehot, onehot))
        0.0
    """
    _check_images(p, q, "p", "q")
    eps = check_positive(eps, "eps", allow_zero=True)
    if ignore_background:
        if p.shape[1] < 2:
            raise InvalidInputError(
                f"p: ignore_background drops channel 0 and needs >= 2 channels, got shape "
                f"{tuple(p.shape)}"
            )
        p, q = p[:, 1:], q[:, 1:]
    inter = (p * q).flatten(2).sum(-1)
    total = p.flatten(2).sum(-1) + q.flatten(2).sum(-1)
    return 1 - ((2 * inter + eps) / (total + eps)).mean()


def _check_regularised_field(u: Any, need: int) -> int:
    n = check_field(u, "u")
    if min(u.shape[2:]) < need:
        raise InvalidInputError(
            f"u: expected every spatial size >= {need} for the finite differences, got shape "
            f"{tuple(u.shape)}"
        )
    return n


def diffusion_loss(u: torch.Tensor) -> torch.Tensor:
    """The diffusion regulariser: the mean squared forward difference of the field, averaged
    over the axes.

    ``(1/N) sum_i mean_{b, c, p} (u_c(p + e_i) - u_c(p))**2`` with ``e_i`` one pixel along axis
    ``i``, the mean over the pixels that have a neighbour along that axis (``N`` = 2 or 3).
    This is VoxelMorph's ``Grad("l2")`` (its PyTorch version: the mean over the axes of each
    axis' mean squared difference, ``loss_mult=None``). MONAI's ``DiffusionLoss`` instead uses
    central differences ``(u(p + e_i) - u(p - e_i)) / 2`` on the interior and sums the axes,
    so its values differ. Zero for a constant field.

    Args:
        u: a displacement (or velocity) field ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``, every
            spatial size ``>= 2``.

    Returns:
        A scalar, in squared pixels.

    Example:
        >>> u = torch.zeros(1, 2, 4, 4); u[:, 0, :, 2:] = 1.0  # a step of 1 pixel along x
        >>> diffusion_loss(u)  # (4 steps of 1 in 2 * 12 x-differences + 0 along y) / 2
        tensor(0.0833)
    """
    n = _check_regularised_field(u, 2)
    terms = [torch.diff(u, dim=axis).square().mean() for axis in range(2, n + 2)]
    return torch.stack(terms).mean()


def bending_energy(u: torch.Tensor) -> torch.Tensor:
    """The bending energy of a field: the mean squared second derivatives, mixed ones included.

    ``mean_{b, c, p} [ sum_i (d_ii u_c)**2 + 2 sum_{i<j} (d_ij u_c)**2 ]`` over the interior
    pixels ``p`` (one pixel in from every border), with ``d_ii u = u(p + e_i) - 2 u(p) +
    u(p - e_i)`` and ``d_ij u = (u(p + e_i + e_j) - u(p + e_i - e_j) - u(p - e_i + e_j) +
    u(p - e_i - e_j)) / 4``, in pixel units. The numbers of MONAI's ``BendingEnergyLoss()``
    (``normalize=False``, mean reduction) as MONAI 1.6 computes it, with these compact
    stencils (its older releases differenced central differences twice: a wider stencil).
    Zero for an affine field, whose second derivatives vanish.

    Args:
        u: a displacement (or velocity) field ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``, every
            spatial size ``>= 3``.

    Returns:
        A scalar, in squared pixels.

    Example:
        >>> y, x = torch.meshgrid(torch.arange(5.0), torch.arange(6.0), indexing="ij")
        >>> float(bending_energy(torch.stack([2 * x + 3 * y, -x])[None]))  # affine
        0.0
        >>> float(bending_energy(torch.stack([x**2, 0 * x])[None]))  # d_xx = 2 for channel 0
        2.0
    """
    n = _check_regularised_field(u, 3)
    inner = slice(1, -1)

    def part(shifts: dict[int, int]) -> torch.Tensor:
        """``u`` shifted by ``shifts[axis]`` pixels along the given axes, on the interior."""
        index: list[slice] = [slice(None), slice(None)]
        for axis in range(2, n + 2):
            s = shifts.get(axis, 0)
            index.append(slice(1 + s, u.shape[axis] - 1 + s))
        return u[tuple(index)]

    centre = u[(slice(None), slice(None), *([inner] * n))]
    energy = torch.zeros_like(centre)
    for i in range(2, n + 2):
        d_ii = part({i: 1}) - 2 * centre + part({i: -1})
        energy = energy + d_ii.square()
        for j in range(i + 1, n + 2):
            d_ij = (
                part({i: 1, j: 1})
                - part({i: 1, j: -1})
                - part({i: -1, j: 1})
                + part({i: -1, j: -1})
            ) / 4
            energy = energy + 2 * d_ij.square()
    return energy.mean()
