// CPU kernels of the sparse compute backend (dst_cli/sparse/backend.py): two operations on "streams",
// contiguous runs of floats, from which the backend builds the forward, input-gradient and weight-gradient
// passes of Conv1d/Conv2d/Linear layers whose weights are mostly zero, and the copies between NCHW and the
// batch-last layout.
//
//   spmm:   dst[dst_base[i] + r * dst_row_stride + t]
//             = init[r] + sum_{e in row r} val[e] * src[src_base[i] + off[e] + t]     (t < length; less the
//                                                                                    junk columns, below)
//   sddmm:  grad[pos[e]] (+)= sum_i sum_{t < length} a[a_base[i] + r(e) * a_row_stride + t]
//                                                    * s[s_base[i] + off[e] + t]
//
// A row r is an output channel (forward) or an input channel (input gradient); e runs over its active
// weights (CSR order); off[e] places the weight's input channel and kernel offset in the source buffer; an
// instance i is a sample (streams along the image rows, "rows" layout) or an output pixel (streams along
// the batch, "batch" layout, as SparseProp's sparse_conv2d.cpp:21-99 vectorises over the batch). Unlike
// SparseProp, which adds each weight's contribution into the output in memory (load, FMA, store per
// vector), spmm keeps a tile of up to TILE output vectors in registers while it runs over the row's weights
// (one load and one FMA per vector), and sddmm shares one load of the output gradient between 8 weights.
// In the "rows" layout the stream of an output plane has the padded input's pitch, so each output row
// carries pitch - width junk columns; spmm crops them when it writes the tile out (pitch, width).
//
// Compiled twice by setup.py (avx512.cpp, avx2.cpp): VEC_BYTES=64 with AVX-512, VEC_BYTES=32 with AVX2 +
// FMA; backend.py loads the one the CPU runs. Threads: OpenMP, the runtime torch already loaded (same
// soname), num_threads given by the caller (torch.get_num_threads()).
#include <Python.h>

#include <omp.h>
#if VEC_BYTES == 64
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#ifndef VEC_BYTES
#error "compile with -DVEC_BYTES=32 (AVX2) or -DVEC_BYTES=64 (AVX-512)"
#endif

typedef float vec __attribute__((vector_size(VEC_BYTES)));
typedef float unaligned_vec __attribute__((vector_size(VEC_BYTES), aligned(4)));

constexpr int64_t VL = VEC_BYTES / 4;              // floats per vector
constexpr int TILE = VEC_BYTES == 64 ? 16 : 12;    // accumulator vectors kept in registers (32 or 16 regs)
constexpr int GROUP = 8;                           // weights sharing one gradient load in sddmm

static inline vec load(const float* p) { return *reinterpret_cast<const unaligned_vec*>(p); }
static inline void store(float* p, vec v) { *reinterpret_cast<unaligned_vec*>(p) = v; }
static inline vec splat(float x) { return vec{} + x; }

static inline float horizontal_sum(vec v) {
    float total = 0.0f;
    for (int64_t lane = 0; lane < VL; ++lane) total += v[lane];
    return total;
}

// ----------------------------------------------------------------------------------------------------- spmm

// NI instances x NV vectors of one row, accumulated over the row's weights [e0, e1) into `tile`, starting
// from `start` (the partial sums of earlier channel blocks, one pointer per instance) or from `init`.
template <int NI, int NV>
static void spmm_tile(const int64_t* off, const float* val, int64_t e0, int64_t e1, float init,
                      const float* const* start, const float* const* src, float* tile) {
    vec acc[NI][NV];
#pragma GCC unroll 16
    for (int k = 0; k < NI; ++k)
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) acc[k][v] = start ? load(start[k] + v * VL) : splat(init);
    for (int64_t e = e0; e < e1; ++e) {
        const vec w = splat(val[e]);
        const int64_t o = off[e];
#pragma GCC unroll 16
        for (int k = 0; k < NI; ++k)
#pragma GCC unroll 16
            for (int v = 0; v < NV; ++v) acc[k][v] += w * load(src[k] + o + v * VL);
    }
#pragma GCC unroll 16
    for (int k = 0; k < NI; ++k)
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) store(tile + (k * NV + v) * VL, acc[k][v]);
}

using TileFn = void (*)(const int64_t*, const float*, int64_t, int64_t, float, const float* const*,
                        const float* const*, float*);

template <int NI, int NV>
static constexpr TileFn tile_fn() {
    if constexpr (NI * NV <= TILE) return &spmm_tile<NI, NV>;
    else return nullptr;
}

template <int NI, int... NVm1>
static constexpr void fill_row(TileFn* row, std::integer_sequence<int, NVm1...>) {
    ((row[NVm1 + 1] = tile_fn<NI, NVm1 + 1>()), ...);
}

template <int... NIm1>
static constexpr void fill_table(TileFn (*table)[TILE + 1], std::integer_sequence<int, NIm1...>) {
    ((fill_row<NIm1 + 1>(table[NIm1 + 1], std::make_integer_sequence<int, TILE>{})), ...);
}

struct TileTable {
    TileFn fn[TILE + 1][TILE + 1] = {};  // [instances][vectors]
    TileTable() { fill_table(fn, std::make_integer_sequence<int, TILE>{}); }
};
static const TileTable TILES;

// Writes `n` stream values starting at stream position t0 to an output row, without the junk columns
// (positions whose column, t % pitch, is >= width).
static inline void emit(const float* values, int64_t t0, int64_t n, float* row, int64_t pitch, int64_t width) {
    if (pitch == width) {
        std::memcpy(row + t0, values, n * sizeof(float));
        return;
    }
    for (int64_t t = t0, end = t0 + n; t < end;) {
        const int64_t line = t / pitch, column = t % pitch;
        if (column >= width) {
            t += pitch - column;
            continue;
        }
        const int64_t run = std::min(width - column, end - t);
        std::memcpy(row + line * width + column, values + (t - t0), run * sizeof(float));
        t += run;
    }
}

// First row of thread `me`'s share of `team`, so that the shares hold about equal numbers of weights.
static int64_t first_row(int64_t rows, const int64_t* row_ptr, int me, int team) {
    if (me == 0) return 0;
    if (me == team) return rows;
    const int64_t target = row_ptr[rows] * me / team;
    return std::upper_bound(row_ptr, row_ptr + rows + 1, target) - row_ptr - 1;
}

// Each thread owns whole rows. The weights of a row are split into blocks of source channels (splits:
// rows x (blocks + 1) entry indices, ascending channel order): for one tile of instances, every row runs over
// one block before any row moves to the next, so that the sources in use stay in the core's cache; the
// partial sums wait in a per-thread scratch row until the last block writes the tile out.
extern "C" void dst_spmm(int64_t rows, const int64_t* row_ptr, const int64_t* splits, int64_t blocks,
                         const int64_t* off, const float* val, const float* bias, const float* src,
                         int64_t instances, const int64_t* src_base, float* dst, const int64_t* dst_base,
                         int64_t dst_row_stride, int64_t length, int64_t pitch, int64_t width, int threads) {
    const int64_t vectors = (length + VL - 1) / VL;
    // Long streams (a sample's plane): one instance, tiles of up to TILE vectors along the stream (equal
    // shares). Short streams (a pixel's batch): all of its vectors, as many instances as fill the tile.
    const bool along_stream = vectors > TILE / 2;
    const int64_t chunks = along_stream ? (vectors + TILE - 1) / TILE : 1;
    const int64_t tile_vectors = (vectors + chunks - 1) / chunks;
    const int64_t tile_instances = along_stream ? 1 : TILE / vectors;
    const int64_t groups = (instances + tile_instances - 1) / tile_instances;
#pragma omp parallel num_threads(threads)
    {
        const int me = omp_get_thread_num(), team = omp_get_num_threads();
        const int64_t r0 = first_row(rows, row_ptr, me, team), r1 = first_row(rows, row_ptr, me + 1, team);
        std::vector<float> tile(TILE * VL);
        std::vector<float> partial(blocks > 1 ? (r1 - r0) * TILE * VL : 0);
        const float* src_at[TILE];
        const float* start_at[TILE];
        for (int64_t group = 0; group < groups; ++group) {
            const int64_t i0 = group * tile_instances;
            const int64_t ni = std::min(tile_instances, instances - i0);
            for (int64_t chunk = 0; chunk < chunks; ++chunk) {
                const int64_t t0 = chunk * tile_vectors * VL;
                const int64_t nv = std::min(tile_vectors, vectors - chunk * tile_vectors);
                const int64_t n = std::min(nv * VL, length - t0);
                for (int64_t k = 0; k < ni; ++k) src_at[k] = src + src_base[i0 + k] + t0;
                for (int64_t block = 0; block < blocks; ++block) {
                    const bool last = block == blocks - 1;
                    for (int64_t r = r0; r < r1; ++r) {
                        const int64_t* split = splits + r * (blocks + 1) + block;
                        if (!last && block > 0 && split[0] == split[1]) continue;  // nothing to add yet
                        float* scratch = partial.data() + (r - r0) * TILE * VL;
                        for (int64_t k = 0; k < ni; ++k) start_at[k] = scratch + k * nv * VL;
                        TILES.fn[ni][nv](off, val, split[0], split[1], bias ? bias[r] : 0.0f,
                                         block > 0 ? start_at : nullptr, src_at, last ? tile.data() : scratch);
                        if (!last) continue;
                        for (int64_t k = 0; k < ni; ++k)
                            emit(tile.data() + k * nv * VL, t0, n, dst + dst_base[i0 + k] + r * dst_row_stride,
                                 pitch, width);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------- sddmm

// Adds to sums[g] the dot products of one row's gradient streams with G weights' source streams over the
// instances [i0, i1).
template <int G>
static void sddmm_group(const int64_t* off, const float* a, const int64_t* a_base, const float* s,
                        const int64_t* s_base, int64_t i0, int64_t i1, int64_t length, float* sums) {
    vec acc[G];
    float tail[G];
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
        acc[g] = vec{};
        tail[g] = 0.0f;
    }
    const int64_t body = length - length % VL;
    for (int64_t i = i0; i < i1; ++i) {
        const float* pa = a + a_base[i];
        const float* ps[G];
#pragma GCC unroll 8
        for (int g = 0; g < G; ++g) ps[g] = s + s_base[i] + off[g];
        for (int64_t t = 0; t < body; t += VL) {
            const vec av = load(pa + t);
#pragma GCC unroll 8
            for (int g = 0; g < G; ++g) acc[g] += av * load(ps[g] + t);
        }
        for (int64_t t = body; t < length; ++t)
#pragma GCC unroll 8
            for (int g = 0; g < G; ++g) tail[g] += pa[t] * ps[g][t];
    }
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) sums[g] += horizontal_sum(acc[g]) + tail[g];
}

using GroupFn = void (*)(const int64_t*, const float*, const int64_t*, const float*, const int64_t*, int64_t,
                         int64_t, int64_t, float*);
static const GroupFn GROUPS[GROUP + 1] = {nullptr,         &sddmm_group<1>, &sddmm_group<2>,
                                          &sddmm_group<3>, &sddmm_group<4>, &sddmm_group<5>,
                                          &sddmm_group<6>, &sddmm_group<7>, &sddmm_group<8>};

extern "C" void dst_sddmm(int64_t rows, const int64_t* row_ptr, const int64_t* splits, int64_t blocks,
                          const int64_t* off, const float* a, const int64_t* a_base, int64_t a_row_stride,
                          const float* s, const int64_t* s_base, int64_t instances, int64_t instance_block,
                          int64_t length, float* grad, const int64_t* pos, int accumulate, int threads) {
    const int64_t nnz = row_ptr[rows];
    std::vector<float> sums(nnz, 0.0f);
#pragma omp parallel num_threads(threads)
    {
        // Each thread owns whole rows (no reduction) and runs over the instances in blocks, and over each
        // block's source channels in blocks (splits, as in dst_spmm), so that the sources and gradients in
        // use stay in its cache.
        const int me = omp_get_thread_num(), team = omp_get_num_threads();
        const int64_t r0 = first_row(rows, row_ptr, me, team), r1 = first_row(rows, row_ptr, me + 1, team);
        for (int64_t i0 = 0; i0 < instances; i0 += instance_block) {
            const int64_t i1 = std::min(instances, i0 + instance_block);
            for (int64_t block = 0; block < blocks; ++block) {
                for (int64_t r = r0; r < r1; ++r) {
                    const float* a_row = a + r * a_row_stride;
                    const int64_t e1 = splits[r * (blocks + 1) + block + 1];
                    for (int64_t e = splits[r * (blocks + 1) + block]; e < e1; e += GROUP) {
                        const int64_t g = std::min<int64_t>(GROUP, e1 - e);
                        GROUPS[g](off + e, a_row, a_base, s, s_base, i0, i1, length, sums.data() + e);
                    }
                }
            }
        }
    }
    if (accumulate) {
        for (int64_t e = 0; e < nnz; ++e) grad[pos[e]] += sums[e];
    } else {
        for (int64_t e = 0; e < nnz; ++e) grad[pos[e]] = sums[e];
    }
}

// ------------------------------------------------------------------------------------ batch-last copies

#if VEC_BYTES == 64
// GCC 12's avx512fintrin.h trips its own -Wuninitialized (_mm512_undefined_ps)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// 16 rows of 16 floats (row i at src + i * src_stride) written as 16 columns: column j to out[j].
static inline void transpose16(const float* src, int64_t src_stride, float* const* out) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * src_stride);
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {  // per 128-bit lane k: r[i + m] = column 4k + m of rows i..i+3
        const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
        const __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int m = 0; m < 4; ++m) {
        t[m] = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x88);
        t[4 + m] = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xdd);
        t[8 + m] = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x88);
        t[12 + m] = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xdd);
    }
    for (int m = 0; m < 4; ++m) {
        _mm512_storeu_ps(out[m], _mm512_shuffle_f32x4(t[m], t[8 + m], 0x88));
        _mm512_storeu_ps(out[8 + m], _mm512_shuffle_f32x4(t[m], t[8 + m], 0xdd));
        _mm512_storeu_ps(out[4 + m], _mm512_shuffle_f32x4(t[4 + m], t[12 + m], 0x88));
        _mm512_storeu_ps(out[12 + m], _mm512_shuffle_f32x4(t[4 + m], t[12 + m], 0xdd));
    }
}
#pragma GCC diagnostic pop
#else
static inline void transpose16(const float* src, int64_t src_stride, float* const* out) {
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j) out[j][i] = src[i * src_stride + j];
}
#endif

// The element (row i, column j) of a rows x columns block at src (row stride src_stride) goes to
// out_at(j)[i]; 16 x 16 tiles are transposed in registers, the edges element by element.
template <typename Column>
static inline void transpose(const float* src, int64_t rows, int64_t columns, int64_t src_stride, Column out_at) {
    float* out[16];
    for (int64_t i0 = 0; i0 < rows; i0 += 16) {
        for (int64_t j0 = 0; j0 < columns; j0 += 16) {
            if (i0 + 16 <= rows && j0 + 16 <= columns) {
                for (int j = 0; j < 16; ++j) out[j] = out_at(j0 + j) + i0;
                transpose16(src + i0 * src_stride + j0, src_stride, out);
                continue;
            }
            for (int64_t j = j0; j < std::min(columns, j0 + 16); ++j) {
                float* to = out_at(j);
                for (int64_t i = i0; i < std::min(rows, i0 + 16); ++i) to[i] = src[i * src_stride + j];
            }
        }
    }
}

// dst (C, top + H + bottom, left + W + right, B) = src (B, C, H, W) moved to the batch-last layout, zero
// around; the "batch" kernels read their sources in this layout.
extern "C" void dst_batch_last(const float* src, int64_t batch, int64_t channels, int64_t height, int64_t width,
                               int64_t top, int64_t bottom, int64_t left, int64_t right, float* dst, int threads) {
    const int64_t out_width = left + width + right, out_height = top + height + bottom;
    const int64_t pixels = height * width;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t c = 0; c < channels; ++c) {
        float* out = dst + c * out_height * out_width * batch;
        std::memset(out, 0, top * out_width * batch * sizeof(float));
        std::memset(out + (top + height) * out_width * batch, 0, bottom * out_width * batch * sizeof(float));
        for (int64_t y = 0; y < height; ++y) {
            float* line = out + (top + y) * out_width * batch;
            std::memset(line, 0, left * batch * sizeof(float));
            std::memset(line + (left + width) * batch, 0, right * batch * sizeof(float));
        }
        // rows: samples; columns: pixels, each to its place in the padded plane
        transpose(src + c * pixels, batch, pixels, channels * pixels, [&](int64_t p) {
            return out + ((top + p / width) * out_width + left + p % width) * batch;
        });
    }
}

// dst (B, C, P) = src (C, P, B): a batch-last result back to NCHW (P = H * W).
extern "C" void dst_batch_first(const float* src, int64_t channels, int64_t pixels, int64_t batch, float* dst,
                                int threads) {
    const int64_t sample_stride = channels * pixels;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t c = 0; c < channels; ++c) {
        // rows: pixels; columns: samples
        transpose(src + c * pixels * batch, pixels, batch, batch, [&](int64_t b) {
            return dst + b * sample_stride + c * pixels;
        });
    }
}

// ------------------------------------------------------------------------------------------- module stub

// The library is loaded with ctypes; the stub only makes it an importable extension module, so that the
// backend finds it through the import system.
static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, KERNELS_MODULE_NAME, nullptr, -1, nullptr};

#define INIT_NAME_(name) PyInit_##name
#define INIT_NAME(name) INIT_NAME_(name)
PyMODINIT_FUNC INIT_NAME(KERNELS_MODULE)(void) { return PyModule_Create(&module_def); }
