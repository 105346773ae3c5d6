"""Sparse compute backend: run the prunable layers of a masked model on their active weights only (CPU).

Masks on dense tensors cost what dense training costs; here each prunable Conv1d/Conv2d/Linear layer runs its
forward pass, its input gradient and its weight gradient through C++ kernels (dst_cli/sparse/kernels) that
touch only the active weights, while the model keeps its dense weights, its state_dict and its optimizer:

    engine = sparsify(model, optimizer, ..., backend="auto")   # the engine attaches it and drives it:
    # before each training forward, backend.use_masked(engine.needs_dense_gradient()) (rigl, ee: update steps)
    # after each mask update and load_state_dict, backend.rebuild(masks)

mode "sparse": every layer with a kernel runs it (the faster of the eligible kernels, timed once per input
shape); "auto": per layer the faster of the sparse kernel and the module's own dense forward (the masked path),
timed on the layer's input shape at its first forward, as SparseProp's `sparsify_if_faster` /
`sparsify_conv2d_auto` do (sparseprop 0.1.14, sparseprop/modules/__init__.py:9-49 run_and_choose, :63-104),
and timed again when the layer's density has moved by more than `retime_change` since. `use_masked(True)`
sends every layer through the module's own forward (dense gradients) until `use_masked(False)`.

Weight gradients: the kernels compute the gradient at the active positions only and write it into a dense
buffer of the weight's shape, kept per layer, whose inactive entries stay 0; it becomes `weight.grad` when that
is None (no dense work per step), and is added at the active positions when `weight.grad` exists (gradient
accumulation, zero_grad(set_to_none=False)). Autograd's own accumulation is bypassed for these weights, so
hooks on it (post-accumulate-grad hooks, DistributedDataParallel's gradient all-reduce) do not see them on
sparse steps: use the backend in single-process training.

Kernels ("rows", "batch"): "rows" streams along the image rows of NCHW tensors (stride 1 and "same" padding,
or 1x1 without padding; SparseProp's "over output width" idea, sparseprop/lib/sparse_conv2d_over_on.cpp:
10-67), "batch" along the batch of C x H x W x B copies (any stride and padding, Linear, small images;
sparseprop/lib/sparse_conv2d.cpp:9-99). Both are output-stationary (stream_kernels.h). Strided input
gradients split the input pixels by phase (pixel index mod stride), each phase a sparse product with the
weights of that phase. The model's deep copies and pickles should be made after detach().
"""
import ctypes
import importlib
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Mode = Literal["sparse", "auto"]  # "masked", the third backend of sparsify, attaches nothing
MODES = get_args(Mode)
Kernel = Literal["rows", "batch"]
KERNELS = get_args(Kernel)
MASKED = "masked"
PLANS_KEPT = 4  # input shapes per layer whose plans and buffers are kept (training, evaluation, last batches)
CACHE_BLOCK_BYTES = 2**20  # sources + gradients the weight gradient keeps in a core's cache (L2 is 1-2 MiB)
WEIGHT_BLOCK_BYTES = 32 * 2**10  # source channels the "rows" weight gradient keeps in L1 per sample
ROWS_BLOCK_BYTES = 16 * 2**10  # sources one tile of the "rows" kernel keeps in L1 (48 KiB here)
BUILD_HINT = ("build the sparse kernels: `pip install -e .` in the repository (or `python setup.py build_ext "
              "--inplace`); they need a C++17 compiler with OpenMP (g++ or clang++)")


class BackendUnavailable(RuntimeError):
    """The sparse kernels cannot run here: not built, or the CPU lacks AVX2 + FMA."""


# ---------------------------------------------------------------------------------------------- the kernels

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


class KernelLibrary:
    """The compiled kernels for this CPU (dst_cli/sparse/kernels/stream_kernels.h), called on tensors."""

    def __init__(self, module_name: str):
        # torch is imported first: the kernels' OpenMP runtime resolves to the one torch loaded (same soname)
        self.name = module_name
        self.lanes = 16 if module_name.endswith("avx512") else 8
        library = ctypes.CDLL(importlib.import_module(module_name).__file__)
        self._spmm, self._sddmm, self._batch_last = library.dst_spmm, library.dst_sddmm, library.dst_batch_last
        self._spmm.restype = self._sddmm.restype = self._batch_last.restype = None
        self._spmm.argtypes = [_I64, _PTR, _PTR, _I64, _PTR, _PTR, _PTR, _PTR, _I64, _PTR, _PTR, _PTR, _I64, _I64,
                               _I64, _I64, ctypes.c_int]
        self._batch_last.argtypes = [_PTR, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _PTR, ctypes.c_int]
        self._batch_first = library.dst_batch_first
        self._batch_first.restype = None
        self._batch_first.argtypes = [_PTR, _I64, _I64, _I64, _PTR, ctypes.c_int]
        self._sddmm.argtypes = [_I64, _PTR, _PTR, _I64, _PTR, _PTR, _PTR, _I64, _PTR, _PTR, _I64, _I64, _I64, _PTR,
                                _PTR, ctypes.c_int, ctypes.c_int]
        self.tile_vectors = 16 if self.lanes == 16 else 12  # TILE in stream_kernels.h

    def spmm(self, rows: "RowMajor", values: Tensor, bias: Tensor | None, src: Tensor, src_base: Tensor,
             dst: Tensor, dst_base: Tensor, dst_row_stride: int, length: int, pitch: int, width: int) -> None:
        """dst[dst_base[i] + r * dst_row_stride + crop(t)] = bias[r] + sum_e values[e] * src[src_base[i] +
        off[e] + t] over the entries e of row r, for t < length; crop drops the stream positions whose column
        (t % pitch) is >= width."""
        self._spmm(rows.rows, rows.row_ptr.data_ptr(), rows.splits.data_ptr(), rows.blocks, rows.off.data_ptr(),
                   values.data_ptr(), None if bias is None else bias.data_ptr(), src.data_ptr(), src_base.numel(),
                   src_base.data_ptr(), dst.data_ptr(), dst_base.data_ptr(), dst_row_stride, length, pitch, width,
                   torch.get_num_threads())

    def sddmm(self, rows: "RowMajor", a: Tensor, a_base: Tensor, a_row_stride: int, s: Tensor, s_base: Tensor,
              instance_block: int, length: int, grad: Tensor, accumulate: bool) -> None:
        """grad[pos[e]] (+)= sum_i sum_{t < length} a[a_base[i] + r(e) * a_row_stride + t]
        * s[s_base[i] + off[e] + t]."""
        self._sddmm(rows.rows, rows.row_ptr.data_ptr(), rows.splits.data_ptr(), rows.blocks, rows.off.data_ptr(),
                    a.data_ptr(), a_base.data_ptr(), a_row_stride, s.data_ptr(), s_base.data_ptr(), s_base.numel(),
                    instance_block, length, grad.data_ptr(), rows.pos.data_ptr(), int(accumulate),
                    torch.get_num_threads())

    def batch_last(self, x: Tensor, pads: tuple[int, int, int, int], out: Tensor) -> Tensor:
        """x (B, C, H, W) into out (C, top + H + bottom, left + W + right, B), zero around (pads: top, bottom,
        left, right)."""
        batch, channels, height, width = x.shape
        top, bottom, left, right = pads
        self._batch_last(x.data_ptr(), batch, channels, height, width, top, bottom, left, right, out.data_ptr(),
                         torch.get_num_threads())
        return out

    def batch_first(self, x: Tensor, height: int, width: int) -> Tensor:
        """x (C, H * W, B) as a (B, C, H, W) copy."""
        channels, pixels, batch = x.shape
        out = x.new_empty(batch, channels, height, width)
        self._batch_first(x.data_ptr(), channels, pixels, batch, out.data_ptr(), torch.get_num_threads())
        return out


_library: KernelLibrary | None = None
_library_error: str | None = None


def kernel_library() -> KernelLibrary:
    """The kernels for this CPU, loaded once; BackendUnavailable says why they cannot run and what to do."""
    global _library, _library_error
    if _library is None and _library_error is None:
        try:
            _library = _load_library()
        except BackendUnavailable as error:
            _library_error = str(error)
    if _library is None:
        raise BackendUnavailable(_library_error)
    return _library


def unavailable_reason() -> str | None:
    """Why the sparse kernels cannot run here, or None when they can."""
    try:
        kernel_library()
    except BackendUnavailable as error:
        return str(error)
    return None


def _load_library() -> KernelLibrary:
    capability = torch.backends.cpu.get_cpu_capability()
    candidates = {"AVX512": ["_avx512", "_avx2"], "AVX2": ["_avx2"]}.get(capability)
    if candidates is None:
        raise BackendUnavailable(f"the sparse kernels need a CPU with AVX2 + FMA; torch reports this CPU as "
                                 f"{capability}. Use the masked (dense) path on this machine.")
    missing = []
    for name in candidates:
        module_name = f"dst_cli.sparse.kernels.{name}"
        try:
            return KernelLibrary(module_name)
        except (ImportError, OSError) as error:
            missing.append(f"{module_name} ({error})")
    raise BackendUnavailable(f"the sparse kernels are not built ({'; '.join(missing)}); {BUILD_HINT}")


# ------------------------------------------------------------------------------------------- layer geometry

@dataclass(frozen=True)
class Geometry:
    """A prunable layer seen as a 2-d convolution on float32 NCHW tensors: Linear is a 1x1 convolution of a
    1x1 image, Conv1d a (1, k) convolution of a one-pixel-high image."""

    out_channels: int
    in_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    input_dims: int  # dimensions of one batched input of the module (2 for Linear, 3 Conv1d, 4 Conv2d)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return tuple((size + 2 * pad - k) // s + 1 for size, pad, k, s in
                     zip((height, width), self.padding, self.kernel, self.stride))

    def kernels(self) -> tuple[str, ...]:
        """The kernels that can run this layer: "rows" needs stride 1 and "same" padding (2 p = k - 1), or a
        1x1 kernel without padding (any stride: it reads every stride-th pixel)."""
        same = all(2 * pad == k - 1 for pad, k in zip(self.padding, self.kernel))
        pointwise = self.kernel == (1, 1) and self.padding == (0, 0)
        rows = self.input_dims > 2 and ((self.stride == (1, 1) and same) or pointwise)
        return ("rows", "batch") if rows else ("batch",)


def layer_geometry(module: nn.Module) -> Geometry | str:
    """The module's Geometry, or why no kernel can run it."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor) or weight.dtype != torch.float32 or weight.device.type != "cpu":
        return "the kernels run float32 weights on the CPU"
    if isinstance(module, nn.Linear):
        return Geometry(module.out_features, module.in_features, (1, 1), (1, 1), (0, 0), 2)
    if not isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return f"no kernel for {type(module).__name__} (Conv1d, Conv2d and Linear have one)"
    if module.groups != 1 or any(d != 1 for d in module.dilation) or module.padding_mode != "zeros":
        return "no kernel for grouped, dilated or non-zero-padded convolutions"
    padding = _numeric_padding(module)
    if padding is None:
        return "no kernel for padding='same' with stride > 1 or an even kernel"
    as_2d = (lambda pair: (1, *pair)) if isinstance(module, nn.Conv1d) else tuple
    pad_2d = (0, *padding) if isinstance(module, nn.Conv1d) else tuple(padding)
    return Geometry(module.out_channels, module.in_channels, as_2d(module.kernel_size), as_2d(module.stride),
                    pad_2d, 3 if isinstance(module, nn.Conv1d) else 4)


def _numeric_padding(module: nn.Module) -> tuple[int, ...] | None:
    if module.padding == "valid":
        return (0,) * len(module.kernel_size)
    if module.padding == "same":
        if any(s != 1 for s in module.stride) or any(k % 2 == 0 for k in module.kernel_size):
            return None
        return tuple((k - 1) // 2 for k in module.kernel_size)
    return tuple(module.padding)


# ---------------------------------------------------------------------------------- compressed weights

@dataclass
class RowMajor:
    """Active weights grouped by row (output channel, or input channel for the input gradient): entries
    row_ptr[r]..row_ptr[r+1] belong to row r, in ascending order of their source channel (input channel, or
    output channel); `pos` is each entry's flat position in the weight, `off` its offset in the source buffer
    of one kernel call. `splits` (rows x (blocks + 1)) cuts each row where its source channel enters the next
    block of channels: the kernels run over one block of sources at a time (see with_channel_blocks)."""

    rows: int
    row_ptr: Tensor
    pos: Tensor
    off: Tensor
    source: Tensor
    splits: Tensor
    blocks: int = 1

    def with_channel_blocks(self, channels: int, block_channels: int) -> "RowMajor":
        """A copy whose rows are split into blocks of `block_channels` source channels."""
        blocks = max(1, -(-channels // max(1, block_channels)))
        row_of_entry = torch.repeat_interleave(_arange(self.rows), self.row_ptr.diff())
        per_block = torch.bincount(row_of_entry * blocks + self.source // max(1, block_channels),
                                   minlength=self.rows * blocks).view(self.rows, blocks)
        splits = torch.zeros(self.rows, blocks + 1, dtype=torch.int64)
        splits[:, 1:] = per_block.cumsum(1)
        splits += self.row_ptr[:-1, None]
        return RowMajor(self.rows, self.row_ptr, self.pos, self.off, self.source, splits.contiguous(), blocks)


class Structure:
    """The active weights of one layer from its mask: flat positions in output-channel order (the order of
    mask.nonzero(), CSR) and the coordinates (out, in, ky, kx) of each."""

    def __init__(self, mask: Tensor, geometry: Geometry):
        kh, kw = geometry.kernel
        self.pos = mask.reshape(-1).nonzero().squeeze(1)
        per_out = geometry.in_channels * kh * kw
        self.out_channel = self.pos // per_out
        rest = self.pos % per_out
        self.in_channel = rest // (kh * kw)
        self.ky = rest // kw % kh
        self.kx = rest % kw
        self.count = self.pos.numel()

    def rows(self, by_input: bool, select: Tensor | None, off: Tensor, row_count: int) -> RowMajor:
        """The entries (all, or those `select` keeps) grouped by output channel, or by input channel when
        `by_input`, with their source offsets `off` (one per entry of the structure), in one block of channels.
        Within a row, entries come in ascending position order, so in ascending source channel."""
        key, source = (self.in_channel, self.out_channel) if by_input else (self.out_channel, self.in_channel)
        order = torch.argsort(key, stable=True) if by_input else torch.arange(self.count)
        if select is not None:
            order = order[select[order]]
        row_ptr = torch.zeros(row_count + 1, dtype=torch.int64)
        row_ptr[1:] = torch.bincount(key[order], minlength=row_count).cumsum(0)
        return RowMajor(row_count, row_ptr, self.pos[order].contiguous(), off[order].contiguous(),
                        source[order].contiguous(), torch.stack([row_ptr[:-1], row_ptr[1:]], 1).contiguous())


def channel_block(bytes_per_channel: int, budget: int = 0) -> int:
    """Source channels whose data (bytes_per_channel each, for the instances of one tile or block) fit in
    `budget` bytes (CACHE_BLOCK_BYTES by default)."""
    return max(1, (budget or CACHE_BLOCK_BYTES) // max(1, bytes_per_channel))


def _arange(n: int, step: int = 1) -> Tensor:
    return torch.arange(n, dtype=torch.int64) * step


class BufferPool:
    """Reusable float32 tensors of one size, each followed by `slack` zero floats (whole-vector reads past
    a stream's end) and zero when first made. A buffer is handed out again once only the pool refers to it,
    i.e. once the autograd graph that saved it is gone: a fresh large tensor per step costs a page fault per
    4 KiB page on first touch."""

    KEEP = 2

    def __init__(self, size: tuple[int, ...], slack: int):
        self.size, self.slack = size, slack
        self.buffers: list[Tensor] = []

    def get(self) -> Tensor:
        for buffer in self.buffers:
            if sys.getrefcount(buffer) == 3:  # the list, `buffer` and getrefcount's argument
                return buffer
        numel = math.prod(self.size)
        buffer = torch.zeros(numel + self.slack)[:numel].view(self.size)
        if len(self.buffers) < self.KEEP:
            self.buffers.append(buffer)
        return buffer


# --------------------------------------------------------------------------------------------------- plans

class RowsPlan:
    """One layer at one input shape with the "rows" kernel: NCHW streams along the image rows. The input is
    copied once, zero-padded (and `extra` zero rows below each plane for the kernels' whole-vector reads);
    each output plane is a stream with the padded input's pitch, cropped to the output width. A strided 1x1
    layer runs on every stride-th pixel of the input (and scatters its input gradient back)."""

    def __init__(self, structure: Structure, geometry: Geometry, shape: tuple[int, int, int, int],
                 library: KernelLibrary):
        batch, _, in_height, in_width = shape
        (kh, kw), (ph, pw) = geometry.kernel, geometry.padding
        lanes = library.lanes
        self.geometry, self.in_size = geometry, (in_height, in_width)
        # "same" padding or a 1x1 kernel: the output is the (subsampled) input's size
        self.height, self.width = height, width = geometry.output_size(in_height, in_width)
        self.pads = (ph, pw)
        self.pitch = width + 2 * pw
        # zero rows under each plane for whole-vector reads past its end; a 1x1 kernel whose planes are whole
        # vectors reads the tensors as they are
        copies = (kh, kw) != (1, 1) or (height * width) % lanes != 0
        self.strided = geometry.stride != (1, 1)
        self.extra = -(-(kw + lanes) // self.pitch) if copies else 0
        self.plane = (height + 2 * ph + self.extra) * self.pitch
        padded_height = height + 2 * ph + self.extra
        ic_count, oc_count = geometry.in_channels, geometry.out_channels
        self.input_pool = (BufferPool((batch, ic_count, padded_height, self.pitch), 0)
                           if copies or self.strided else None)
        self.grad_pool = BufferPool((batch, oc_count, padded_height, self.pitch), 0) if copies else None
        s = structure
        # a tile of the output stream reads this many bytes of each source channel
        tile_bytes = 4 * (min(library.tile_vectors * lanes, height * self.pitch) + (kh - 1) * self.pitch + kw)
        forward_off = s.in_channel * self.plane + s.ky * self.pitch + s.kx
        self.forward_rows = s.rows(False, None, forward_off, oc_count).with_channel_blocks(
            ic_count, channel_block(tile_bytes, ROWS_BLOCK_BYTES))
        backward_off = s.out_channel * self.plane + (kh - 1 - s.ky) * self.pitch + (kw - 1 - s.kx)
        self.backward_rows = s.rows(True, None, backward_off, ic_count).with_channel_blocks(
            oc_count, channel_block(tile_bytes, ROWS_BLOCK_BYTES))
        self.x_base = _arange(batch, ic_count * self.plane)
        self.out_base = _arange(batch, oc_count * height * width)
        self.grad_base = _arange(batch, oc_count * self.plane)
        self.grad_x_base = _arange(batch, ic_count * height * width)
        self.grad_origin = self.grad_base + ph * self.pitch + pw  # where each sample's dO[0, 0] lies
        # the weight gradient runs over blocks of samples and, within one, over blocks of input channels
        self.sample_block = max(1, CACHE_BLOCK_BYTES // (4 * self.plane * (ic_count + oc_count)))
        self.weight_rows = self.forward_rows.with_channel_blocks(
            ic_count, channel_block(4 * self.plane * self.sample_block, WEIGHT_BLOCK_BYTES))

    def _padded(self, x: Tensor, pool: BufferPool | None) -> Tensor:
        """x (its every stride-th pixel: `x` is the subsampled input of a strided layer) in a pooled buffer
        whose padding is zero from the start and never written; x itself when no copy is needed."""
        if pool is None:
            return x
        buffer = pool.get()
        ph, pw = self.pads
        buffer[:, :, ph:ph + self.height, pw:pw + self.width].copy_(x)
        return buffer

    def forward(self, library: KernelLibrary, x: Tensor, values: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
        (sh, sw) = self.geometry.stride
        padded = self._padded(x[:, :, ::sh, ::sw] if self.strided else x, self.input_pool)
        out = x.new_empty(x.shape[0], self.geometry.out_channels, self.height, self.width)
        library.spmm(self.forward_rows, values, bias, padded, self.x_base, out, self.out_base,
                     self.height * self.width, self.height * self.pitch, self.pitch, self.width)
        return out, padded

    def prepare_grad(self, library: KernelLibrary, grad_out: Tensor) -> Tensor:
        # "same" padding: dO padded like the input is the input gradient's source and, read from its origin
        # with the same pitch, the weight gradient's (its junk columns are zero padding)
        return self._padded(grad_out, self.grad_pool)

    def input_grad(self, library: KernelLibrary, grad: Tensor, values_by_input: Tensor) -> Tensor:
        grad_x = grad.new_empty(grad.shape[0], self.geometry.in_channels, self.height, self.width)
        library.spmm(self.backward_rows, values_by_input, None, grad, self.grad_base, grad_x, self.grad_x_base,
                     self.height * self.width, self.height * self.pitch, self.pitch, self.width)
        if not self.strided:
            return grad_x
        (sh, sw), (in_height, in_width) = self.geometry.stride, self.in_size
        scattered = grad_x.new_zeros(grad_x.shape[0], grad_x.shape[1], in_height, in_width)
        scattered[:, :, ::sh, ::sw] = grad_x
        return scattered

    def weight_grad(self, library: KernelLibrary, grad: Tensor, saved: Tensor, out: Tensor, accumulate: bool) -> None:
        library.sddmm(self.weight_rows, grad, self.grad_origin, self.plane, saved, self.x_base, self.sample_block,
                      self.height * self.pitch, out, accumulate)

    def values_by_input_positions(self) -> Tensor:
        return self.backward_rows.pos


class BatchPlan:
    """One layer at one input shape with the "batch" kernel: streams along the batch of C x H x W x B
    copies (zero-padded). Any stride and padding; the input gradient of a strided layer is computed phase by
    phase: input pixels whose padded coordinates have the same remainders mod the stride receive gradient from
    the weights with the same remainders of (ky, kx), each phase one sparse product."""

    def __init__(self, structure: Structure, geometry: Geometry, shape: tuple[int, int, int, int],
                 library: KernelLibrary):
        batch, _, height, width = shape
        (sh, sw), (ph, pw) = geometry.stride, geometry.padding
        self.geometry, self.batch, self.height, self.width = geometry, batch, height, width
        self.out_height, self.out_width = geometry.output_size(height, width)
        self.lanes = library.lanes
        self.padded_size = (height + 2 * ph, width + 2 * pw)
        ic_count, oc_count = geometry.in_channels, geometry.out_channels
        s = structure
        plane = self.padded_size[0] * self.padded_size[1] * batch
        forward_off = s.in_channel * plane + (s.ky * self.padded_size[1] + s.kx) * batch
        # spmm tiles hold this many pixels (each a batch of vectors); their sources span this many bytes a channel
        self.tile_pixels = max(1, library.tile_vectors // -(-batch // self.lanes))
        self.forward_rows = s.rows(False, None, forward_off, oc_count).with_channel_blocks(
            ic_count, channel_block(self._source_bytes(self.tile_pixels, self.out_width, (sh, sw))))
        oy, ox = torch.meshgrid(_arange(self.out_height), _arange(self.out_width), indexing="ij")
        self.x_base = ((oy * sh * self.padded_size[1] + ox * sw) * batch).reshape(-1).contiguous()
        self.out_pixels = self.out_height * self.out_width
        self.out_base = _arange(self.out_pixels, batch)
        # the weight gradient runs over blocks of whole output rows (at least 4 pixels), and within one over
        # blocks of input channels
        self.pixel_block = self.out_width * -(-4 // self.out_width)
        self.weight_rows = self.forward_rows.with_channel_blocks(
            ic_count, channel_block(self._source_bytes(self.pixel_block, self.out_width, (sh, sw))))
        self._plan_input_phases(structure, geometry)
        lanes = self.lanes
        self.input_pool = BufferPool((ic_count, *self.padded_size, batch), lanes)
        self.out_pool = BufferPool((oc_count, self.out_pixels, batch), lanes)
        top, bottom, left, right = self.grad_pads
        self.grad_pool = BufferPool((oc_count, top + self.out_height + bottom, left + self.out_width + right,
                                     batch), lanes)
        self.grad_x_pool = BufferPool((ic_count, height * width, batch), lanes)

    def _source_bytes(self, pixels: int, out_width: int, stride: tuple[int, int]) -> int:
        """Bytes of one source channel that `pixels` consecutive output pixels read (batch-last, padded)."""
        (kh, kw), (sh, sw) = self.geometry.kernel, stride
        out_rows = -(-pixels // out_width) + (pixels % out_width != 0)
        source_rows = (out_rows - 1) * sh + kh
        source_columns = (min(pixels, out_width) - 1) * sw + kw
        return 4 * self.batch * source_rows * source_columns

    def _plan_input_phases(self, s: Structure, geometry: Geometry) -> None:
        (kh, kw), (sh, sw), (ph, pw) = geometry.kernel, geometry.stride, geometry.padding
        batch, height, width = self.batch, self.height, self.width
        # zero rows / columns around dO so that every (pixel, weight) pair of a phase reads inside it
        top = max(0, (kh - 1 - ph) // sh)
        left = max(0, (kw - 1 - pw) // sw)
        bottom = max(0, (height - 1 + ph) // sh - (self.out_height - 1))
        right = max(0, (width - 1 + pw) // sw - (self.out_width - 1))
        self.grad_pads = (top, bottom, left, right)
        grad_pitch = left + self.out_width + right
        self.grad_plane = grad_plane = (top + self.out_height + bottom) * grad_pitch * batch
        oy, ox = torch.meshgrid(_arange(self.out_height), _arange(self.out_width), indexing="ij")
        self.grad_origin = (((oy + top) * grad_pitch + ox + left) * batch).reshape(-1).contiguous()
        y, x = torch.meshgrid(_arange(height), _arange(width), indexing="ij")
        y, x = y.reshape(-1), x.reshape(-1)
        self.phases = []
        for ry in range(sh):
            for rx in range(sw):
                pixels = (((y + ph) % sh == ry) & ((x + pw) % sw == rx)).nonzero().squeeze(1)
                if pixels.numel() == 0:
                    continue
                py, px = y[pixels], x[pixels]
                src_base = ((((py + ph - ry) // sh + top) * grad_pitch + (px + pw - rx) // sw + left) * batch)
                weights = (s.ky % sh == ry) & (s.kx % sw == rx)
                off = (s.out_channel * grad_plane
                       - (torch.div(s.ky - ry, sh, rounding_mode="floor") * grad_pitch
                          + torch.div(s.kx - rx, sw, rounding_mode="floor")) * batch)
                rows = s.rows(True, weights, off, geometry.in_channels).with_channel_blocks(
                    geometry.out_channels, channel_block(self._source_bytes(self.tile_pixels, width, (1, 1))))
                self.phases.append((rows, src_base.contiguous(), ((py * width + px) * batch).contiguous()))
        self.backward_pos = torch.cat([rows.pos for rows, _, _ in self.phases])
        # one gather serves every phase: each phase's values are a slice of the concatenation
        self.phase_starts = [0]
        for rows, _, _ in self.phases:
            self.phase_starts.append(self.phase_starts[-1] + rows.pos.numel())

    def forward(self, library: KernelLibrary, x: Tensor, values: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
        (ph, pw) = self.geometry.padding
        source = library.batch_last(x, (ph, ph, pw, pw), self.input_pool.get())
        out = self.out_pool.get()
        library.spmm(self.forward_rows, values, bias, source, self.x_base, out, self.out_base,
                     self.out_pixels * self.batch, self.batch, self.batch, self.batch)
        return library.batch_first(out, self.out_height, self.out_width), source

    def prepare_grad(self, library: KernelLibrary, grad_out: Tensor) -> Tensor:
        # dO zero-padded for the input gradient's phases; the weight gradient reads it from grad_origin
        return library.batch_last(grad_out, self.grad_pads, self.grad_pool.get())

    def input_grad(self, library: KernelLibrary, grad: Tensor, values_by_input: Tensor) -> Tensor:
        # every input pixel is in one phase; a phase without weights writes zeros
        grad_x = self.grad_x_pool.get()
        for (rows, src_base, dst_base), start in zip(self.phases, self.phase_starts):
            library.spmm(rows, values_by_input[start:], None, grad, src_base, grad_x, dst_base,
                         self.height * self.width * self.batch, self.batch, self.batch, self.batch)
        return library.batch_first(grad_x, self.height, self.width)

    def weight_grad(self, library: KernelLibrary, grad: Tensor, saved: Tensor, out: Tensor, accumulate: bool) -> None:
        library.sddmm(self.weight_rows, grad, self.grad_origin, self.grad_plane, saved, self.x_base,
                      self.pixel_block, self.batch, out, accumulate)

    def values_by_input_positions(self) -> Tensor:
        return self.backward_pos


# ------------------------------------------------------------------------------------------------ autograd

class _SparseFunction(torch.autograd.Function):
    """A layer on its active weights. The weight gradient is written into weight.grad directly (module doc);
    autograd gets None for the weight."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, layer: "SparseLayer", plan) -> Tensor:
        out, saved = plan.forward(layer.library, x, layer.values(weight), bias)
        ctx.layer, ctx.plan, ctx.saved, ctx.weight = layer, plan, saved, weight
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        layer, plan, library = ctx.layer, ctx.plan, ctx.layer.library
        grad = plan.prepare_grad(library, grad_out.contiguous())
        grad_x = plan.input_grad(library, grad, layer.values_by_input(ctx.weight, plan)) if needs_x else None
        if needs_weight:
            layer.write_weight_grad(ctx.weight, lambda out, accumulate: plan.weight_grad(
                library, grad, ctx.saved, out, accumulate))
        grad_bias = grad_out.sum((0, 2, 3)) if needs_bias else None
        return grad_x, None, grad_bias, None, None


# --------------------------------------------------------------------------------------------------- layers

class SparseLayer:
    """One prunable module on the sparse path: its geometry, the compressed form of its mask, the plans per
    (kernel, input shape), and the dense gradient buffer that becomes weight.grad."""

    def __init__(self, name: str, module: nn.Module, geometry: Geometry, mask: Tensor, library: KernelLibrary,
                 kernels: tuple[str, ...]):
        self.name, self.module, self.geometry, self.library = name, module, geometry, library
        self.kernels = kernels
        self.choice: dict[tuple, str] = {}        # (input shape, threads) -> kernel or MASKED
        self.timings: dict[str, float] = {}       # seconds per candidate at the last timing
        self.timed_density: float | None = None
        self.last_kernel: str | None = None       # what the last forward ran
        self.rebuild(mask)

    def rebuild(self, mask: Tensor) -> None:
        weight = self.module.weight
        if tuple(mask.shape) != tuple(weight.shape):
            raise ValueError(f"the mask of {self.name} has shape {tuple(mask.shape)}; its weight's is "
                             f"{tuple(weight.shape)}")
        self.structure = Structure(mask.detach().to("cpu", torch.bool), self.geometry)
        self.plans: dict[tuple, object] = {}
        self.values_buffer = torch.empty(self.structure.count)
        self.values_of: tuple[int, int] | None = None  # (id, version) of the weight values_buffer was read from
        self.values_by_input_buffer = torch.empty(self.structure.count)
        # entries made inactive keep their last gradient: start from zeros (a new buffer while the old one is
        # still weight.grad, which must not change under the caller)
        buffer = getattr(self, "grad_buffer", None)
        if buffer is None or weight.grad is buffer:
            self.grad_buffer = torch.zeros_like(weight, memory_format=torch.contiguous_format)
        else:
            buffer.zero_()
        self.grad_buffer_dirty = False

    @property
    def density(self) -> float:
        return self.structure.count / self.module.weight.numel()

    def plan(self, kernel: str, shape: tuple[int, int, int, int]):
        """The plan of `kernel` for this input shape; the plans (and their buffers) of the last
        PLANS_KEPT shapes are kept."""
        key = (kernel, shape)
        plan = self.plans.pop(key, None)
        if plan is None:
            plan_type = RowsPlan if kernel == "rows" else BatchPlan
            plan = plan_type(self.structure, self.geometry, shape, self.library)
            plan.values_by_input_entries = torch.searchsorted(self.structure.pos, plan.values_by_input_positions())
            if len(self.plans) >= PLANS_KEPT:
                self.plans.pop(next(iter(self.plans)))
        self.plans[key] = plan  # most recent last
        return plan

    def values(self, weight: Tensor) -> Tensor:
        """The active weights in output-channel order (gathered for every forward: the optimizer moves them)."""
        self.values_of = (id(weight), weight._version)
        return torch.index_select(weight.detach().view(-1), 0, self.structure.pos, out=self.values_buffer)

    def values_by_input(self, weight: Tensor, plan) -> Tensor:
        """The active weights in the order of the plan's input gradient: from the forward's gathered values
        while they are still this weight's (a short gather), else from the weight."""
        if self.values_of == (id(weight), weight._version):
            source, index = self.values_buffer, plan.values_by_input_entries
        else:
            source, index = weight.detach().view(-1), plan.values_by_input_positions()
        return torch.index_select(source, 0, index, out=self.values_by_input_buffer)

    def write_weight_grad(self, weight: Tensor, compute: Callable[[Tensor, bool], None]) -> None:
        """compute(out, accumulate) writes (or adds) the gradient at the active positions of `out`."""
        grad = weight.grad
        if grad is None:
            if self.grad_buffer_dirty:
                self.grad_buffer.zero_()
                self.grad_buffer_dirty = False
            compute(self.grad_buffer, False)
            weight.grad = self.grad_buffer
        elif grad.is_contiguous() and grad.dtype == torch.float32:
            compute(grad, True)
        else:
            update = torch.zeros_like(weight, memory_format=torch.contiguous_format)
            compute(update, False)
            grad.add_(update)

    def accepts(self, x: Tensor) -> bool:
        """Whether this call can run on the kernels (else the module's own forward runs)."""
        weight = self.module.weight
        dims = self.geometry.input_dims
        shape_ok = x.dim() >= 2 if dims == 2 else x.dim() == dims
        return (shape_ok and x.dtype == torch.float32 and x.device.type == "cpu" and weight.is_contiguous()
                and x.shape[1 if dims > 2 else -1] == self.geometry.in_channels and x.numel() > 0
                and not torch.is_autocast_enabled("cpu"))

    def as_2d_input(self, x: Tensor) -> Tensor:
        if self.geometry.input_dims == 2:
            return x.reshape(-1, x.shape[-1], 1, 1)
        return x.unsqueeze(2) if self.geometry.input_dims == 3 else x

    def from_2d_output(self, out: Tensor, x: Tensor) -> Tensor:
        if self.geometry.input_dims == 2:
            return out.view(*x.shape[:-1], out.shape[1])
        return out.squeeze(2) if self.geometry.input_dims == 3 else out

    def run(self, x: Tensor, kernel: str, weight: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        """The layer on `kernel` (the module's weight and bias unless given)."""
        weight = self.module.weight if weight is None else weight
        bias = self.module.bias if bias is None else bias
        x2d = self.as_2d_input(x)
        plan = self.plan(kernel, tuple(x2d.shape))
        out = _SparseFunction.apply(x2d.contiguous(), weight, bias, self, plan)
        return self.from_2d_output(out, x)

    def run_dense(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """The module's own computation with the given weight and bias (the masked path)."""
        if isinstance(self.module, nn.Linear):
            return F.linear(x, weight, bias)
        return self.module._conv_forward(x, weight, bias)


def _time_candidates(candidates: dict[str, Callable[[], None]], warm_up: Iterable[str], rounds: int,
                     give_up: float = 2.0) -> dict[str, float]:
    """Best seconds of each candidate over a first run and `rounds` more, interleaved. The `warm_up`
    candidates run once untimed before (the sparse kernels build their plans and buffers then). A candidate
    whose first run took `give_up` times the best first run is not run again: its first run is its time (a
    dense layer many times slower than its kernel is not timed twice)."""
    for name in warm_up:
        candidates[name]()
    best = {}
    for name, run in candidates.items():
        start = time.perf_counter()
        run()
        best[name] = time.perf_counter() - start
    contenders = [name for name in candidates if best[name] <= give_up * min(best.values())]
    for _ in range(rounds if len(contenders) > 1 else 0):
        for name in contenders:
            start = time.perf_counter()
            candidates[name]()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def time_layer(layer: SparseLayer, x: Tensor, include_masked: bool, rounds: int = 2,
               backward: bool = True) -> dict[str, float]:
    """Seconds of one forward + backward (forward only without `backward`) of `layer` on random data of x's
    shape, per candidate: its kernels and, with include_masked, the module's own dense forward. The input
    gradient is computed when x needs one. The layer's weights and gradients are not touched (copies are
    used)."""
    if not backward:
        with torch.no_grad():
            sample = torch.randn_like(x)
            candidates = {kernel: (lambda kernel=kernel: layer.run(sample, kernel)) for kernel in layer.kernels}
            if include_masked:
                weight, bias = layer.module.weight, layer.module.bias
                candidates[MASKED] = lambda: layer.run_dense(sample, weight, bias)
            return _time_candidates(candidates, layer.kernels, rounds)
    with torch.enable_grad():
        sample = torch.randn_like(x).requires_grad_(x.requires_grad)
        weight = layer.module.weight.detach().clone().requires_grad_()
        weight.grad = torch.zeros_like(weight)  # kernels add into it, as on a step with a gradient present
        bias = layer.module.bias
        bias = None if bias is None else bias.detach().clone().requires_grad_()
        grad_out = torch.randn_like(layer.run_dense(sample.detach(), weight.detach(), bias))

        def sparse_pass(kernel: str) -> Callable[[], None]:
            return lambda: layer.run(sample, kernel, weight, bias).backward(grad_out)

        candidates = {kernel: sparse_pass(kernel) for kernel in layer.kernels}
        if include_masked:
            candidates[MASKED] = lambda: layer.run_dense(sample, weight, bias).backward(grad_out)
        return _time_candidates(candidates, layer.kernels, rounds)


# -------------------------------------------------------------------------------------------------- backend

class _SparseForward:
    """module.forward while a backend is attached: the layer's kernel, or the module's own forward on masked
    steps, for inputs the kernels do not take, and where the masked path was chosen."""

    def __init__(self, backend: "SparseBackend", layer: SparseLayer, previous: Callable | None):
        self.backend, self.layer = backend, layer
        self.previous = previous  # an instance-level forward the module had before, else its class's

    def dense_forward(self, *args, **kwargs) -> Tensor:
        if self.previous is not None:
            return self.previous(*args, **kwargs)
        return type(self.layer.module).forward(self.layer.module, *args, **kwargs)

    def __call__(self, x: Tensor, *args, **kwargs) -> Tensor:
        layer = self.layer
        if self.backend.masked or args or kwargs or not layer.accepts(x):
            layer.last_kernel = MASKED
            return self.dense_forward(x, *args, **kwargs)
        kernel = self.backend.kernel_for(layer, x)
        layer.last_kernel = kernel
        if kernel == MASKED:
            return self.dense_forward(x)
        return layer.run(x, kernel)


class SparseBackend:
    """The sparse path of one model's prunable layers; built by attach_backend (see the module doc)."""

    def __init__(self, model: nn.Module, mode: str, layers: dict[str, SparseLayer], masked_layers: dict[str, str],
                 reason: str | None, retime_change: float, timing_rounds: int):
        self.model, self.mode, self.layers, self.reason = model, mode, layers, reason
        self.masked_layers = masked_layers  # name -> why it has no kernel
        self.retime_change, self.timing_rounds = retime_change, timing_rounds
        self.masked = False
        self._restore: dict[str, tuple[nn.Module, Callable | None]] = {}
        for name, layer in layers.items():
            module = layer.module
            previous = module.__dict__.get("forward")
            self._restore[name] = (module, previous)
            module.forward = _SparseForward(self, layer, previous)

    # ----- per-step control
    def use_masked(self, masked: bool) -> None:
        """True: the following forwards (and their backwards) run the modules' own dense forward on the
        masked weights, giving dense weight gradients; False: back to the sparse path."""
        self.masked = bool(masked)
        if self.masked:
            # torch may now add dense gradients into a gradient buffer that is weight.grad
            for layer in self.layers.values():
                layer.grad_buffer_dirty = True

    def rebuild(self, masks: dict[str, Tensor]) -> None:
        """Rebuild the compressed form of the named layers from their (new) masks; call after every mask
        update. A layer whose density moved by more than retime_change (relative) since it was timed is timed
        again at its next forward."""
        for name, mask in masks.items():
            layer = self.layers.get(name)
            if layer is None:
                continue
            layer.rebuild(mask)
            timed = layer.timed_density
            if timed is not None and abs(layer.density - timed) > self.retime_change * timed:
                layer.choice.clear()

    def kernel_for(self, layer: SparseLayer, x: Tensor) -> str:
        """The kernel (or MASKED) for this input shape, timing the candidates on the first call."""
        training = torch.is_grad_enabled()  # forward + backward, or forward only (evaluation)
        key = (tuple(x.shape), torch.get_num_threads(), training)
        kernel = layer.choice.get(key)
        if kernel is None:
            include_masked = self.mode == "auto"
            if len(layer.kernels) == 1 and not include_masked:
                kernel = layer.kernels[0]
            else:
                layer.timings = time_layer(layer, x, include_masked, self.timing_rounds, training)
                kernel = min(layer.timings, key=layer.timings.get)
            layer.choice[key] = kernel
            layer.timed_density = layer.density
            layer.plans = {k: plan for k, plan in layer.plans.items() if k[0] == kernel}
        return kernel

    def time_layers(self, example_input: Tensor) -> None:
        """Make every layer's training choice now, for the shapes of `example_input` (one batch of the
        model's input): one forward in eval mode (batch norm statistics are not updated) with gradients on;
        the first training forward does the same otherwise."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                self.model(example_input)
        finally:
            self.model.train(was_training)

    # ----- reading
    @property
    def kernels(self) -> dict[str, str]:
        """Per prunable layer: the kernel its last forward ran ("rows", "batch") or "masked"; layers not run
        yet: their kernel when only one can be chosen, else "untimed"."""
        kernels = dict.fromkeys(self.masked_layers, MASKED)
        for name, layer in self.layers.items():
            if layer.last_kernel is not None:
                kernels[name] = layer.last_kernel
            elif self.mode == "sparse" and len(layer.kernels) == 1:
                kernels[name] = layer.kernels[0]
            else:
                kernels[name] = "untimed"
        return kernels

    @property
    def choices(self) -> dict[str, str]:
        """Per prunable layer: "sparse" or "masked" (what its last forward ran on; "untimed" before the first
        forward of an auto layer)."""
        return {name: kernel if kernel in (MASKED, "untimed") else "sparse" for name, kernel in self.kernels.items()}

    def timings(self) -> dict[str, dict[str, float]]:
        """Seconds of forward + backward per candidate at each layer's last timing."""
        return {name: dict(layer.timings) for name, layer in self.layers.items() if layer.timings}

    def summary(self) -> str:
        """One line: the mode and how many layers run on kernels (or why none can)."""
        if self.reason:
            return f"sparse backend ({self.mode}): all layers masked; {self.reason}"
        kernels = list(self.kernels.values())
        counts = ", ".join(f"{kernels.count(k)} {k}" for k in (*KERNELS, MASKED, "untimed") if k in kernels)
        return f"sparse backend ({self.mode}, {kernel_library().name.rsplit('.', 1)[-1]}): {counts}"

    # ----- removal
    def detach(self) -> None:
        """Give every module its own forward back."""
        for module, previous in self._restore.values():
            if previous is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = previous
        self._restore.clear()
        self.layers.clear()


def _owners(model: nn.Module) -> dict[int, nn.Module]:
    """The first module holding each weight parameter, by the parameter's id (as prunable_weights lists it)."""
    owners: dict[int, nn.Module] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter):
            owners.setdefault(id(weight), module)
    return owners


def attach_backend(model: nn.Module, weights: dict[str, nn.Parameter], masks: dict[str, Tensor],
                   mode: Mode = "auto", *, kernels: Iterable[str] = KERNELS, retime_change: float = 0.1,
                   timing_rounds: int = 2) -> SparseBackend:
    """Route the forward and backward of the prunable layers `weights` ({"<module>.weight": parameter}, as
    engine.names / engine.masks.weights) through the sparse kernels, on the active weights of `masks`
    ({name: bool mask}). mode "sparse": every layer with a kernel runs one (BackendUnavailable if the kernels
    cannot run here); "auto": per layer the faster of its kernel and the masked path, timed at the layer's
    first forward (all masked, with `reason`, if the kernels cannot run here). `kernels` limits the kernels a
    layer may use (a layer left with none stays masked). The model's outputs, parameters and state_dict keys
    are those of the masked model."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is invalid; allowed: {' | '.join(MODES)}")
    allowed = tuple(kernels)
    unknown = [k for k in allowed if k not in KERNELS]
    if unknown:
        raise ValueError(f"kernels={allowed} is invalid; allowed: a subset of {KERNELS}")
    missing = [name for name in weights if name not in masks]
    if missing:
        raise ValueError(f"no mask for the layers {missing}")
    reason = unavailable_reason()
    if reason is not None and mode == "sparse":
        raise BackendUnavailable(reason)
    layers, masked_layers = {}, {}
    owners = _owners(model)
    for name, weight in weights.items():
        module = owners.get(id(weight))
        geometry = layer_geometry(module) if module is not None else f"no module of the model owns {name}"
        if reason is not None:
            masked_layers[name] = reason
        elif isinstance(geometry, str):
            masked_layers[name] = geometry
        elif not [k for k in geometry.kernels() if k in allowed]:
            masked_layers[name] = f"none of the kernels {allowed} runs this layer (it has {geometry.kernels()})"
        else:
            usable = tuple(k for k in geometry.kernels() if k in allowed)
            layers[name] = SparseLayer(name, module, geometry, masks[name], kernel_library(), usable)
    return SparseBackend(model, mode, layers, masked_layers, reason, retime_change, timing_rounds)
