/*
 * Topiary's native compute backend: a thin Node-API layer over OpenBLAS and LAPACK.
 *
 * Every exported function packs its arguments into a Job and returns a Promise. Large jobs run on
 * the libuv thread pool (napi_async_work) while the typed arrays are kept alive by references;
 * small ones (generation makes many) run immediately and return a settled promise, because a
 * thread-pool round trip costs more than the work.
 *
 * src/backend/native.ts validates every size, stride and element type before calling in here, so
 * this file trusts its arguments. All matrices are row-major.
 */
#define NAPI_VERSION 8
#include <node_api.h>

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

/* LAPACK (Fortran ABI, exported by libopenblas). The trailing size_t is the hidden length of the
 * character argument that gfortran-compiled routines expect. */
void spotrf_(const char *uplo, const blasint *n, float *a, const blasint *lda, blasint *info, size_t uplo_len);
void dpotrf_(const char *uplo, const blasint *n, double *a, const blasint *lda, blasint *info, size_t uplo_len);
void spotri_(const char *uplo, const blasint *n, float *a, const blasint *lda, blasint *info, size_t uplo_len);
void dpotri_(const char *uplo, const blasint *n, double *a, const blasint *lda, blasint *info, size_t uplo_len);
void ssyevd_(const char *jobz, const char *uplo, const blasint *n, float *a, const blasint *lda, float *w, float *work,
             const blasint *lwork, blasint *iwork, const blasint *liwork, blasint *info, size_t jobz_len, size_t uplo_len);
void dsyevd_(const char *jobz, const char *uplo, const blasint *n, double *a, const blasint *lda, double *w, double *work,
             const blasint *lwork, blasint *iwork, const blasint *liwork, blasint *info, size_t jobz_len, size_t uplo_len);

/* Below this many floating-point operations a call runs synchronously on the calling thread. */
#define SYNC_FLOP_THRESHOLD 2.0e6
#define MAX_ARGS 13
#define MAX_ARRAYS 8

typedef struct Job Job;
typedef void (*JobRun)(Job *job);

struct Job {
  JobRun run;
  bool fp64;            /* element type of the (same-typed) arrays */
  void *data[MAX_ARRAYS];
  size_t lengths[MAX_ARRAYS];
  double args[MAX_ARGS]; /* numeric arguments after the arrays, in call order */
  bool returns_bool;     /* resolve with `ok` instead of undefined */
  bool ok;
  bool out_of_memory;
  napi_ref refs[MAX_ARRAYS];
  size_t array_count;
  napi_deferred deferred;
  napi_async_work work;
};

#define ARG_INT(job, i) ((blasint)(job)->args[i])

/* ---------- numeric helpers ---------- */

/* Row-major n×n: copy the upper triangle onto the lower one. */
#define DEFINE_MIRROR(name, type)                                                                  \
  static void name(type *a, blasint n) {                                                           \
    for (blasint i = 1; i < n; i++)                                                                \
      for (blasint j = 0; j < i; j++) a[(size_t)i * n + j] = a[(size_t)j * n + i];                  \
  }
DEFINE_MIRROR(mirror_upper_f32, float)
DEFINE_MIRROR(mirror_upper_f64, double)

/* Row-major n×n: zero the strict lower (keep_upper) or strict upper triangle. */
#define DEFINE_ZERO_TRIANGLE(name, type)                                                           \
  static void name(type *a, blasint n, bool keep_upper) {                                          \
    for (blasint i = 0; i < n; i++)                                                                \
      for (blasint j = 0; j < n; j++)                                                              \
        if (keep_upper ? j < i : j > i) a[(size_t)i * n + j] = 0;                                  \
  }
DEFINE_ZERO_TRIANGLE(zero_triangle_f32, float)
DEFINE_ZERO_TRIANGLE(zero_triangle_f64, double)

/*
 * exp(x) with ~2 ulp error for the x ≤ 0 that softmax and silu need (clamped to [-87, 88]), written
 * branch-free so the loops calling it vectorize: x = n·ln2 + r with |r| ≤ ln2/2, exp(r) by a
 * degree-6 polynomial, and 2^n built from the exponent bits. Rounding to n uses the 1.5·2^23
 * trick, which needs no SSE4.1 instruction.
 */
static inline float fast_expf(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float round_magic = 12582912.0f; /* 1.5·2^23 */
  const float n = (x * 1.44269504088896341f + round_magic) - round_magic;
  const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
  float p = 1.3888889e-3f;
  p = p * r + 8.3333338e-3f;
  p = p * r + 4.1666668e-2f;
  p = p * r + 1.6666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  union { int32_t i; float f; } two_to_n = { .i = ((int32_t)n + 127) << 23 };
  return p * two_to_n.f;
}

/* Vector-width variants chosen at load time by the CPU; the default one is plain x86-64. Loops
 * with selects (the clamps in fast_expf) vectorize only because binding.gyp passes
 * -fno-trapping-math: GCC otherwise refuses to if-convert them, which changes no result. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MULTIVERSION
#endif

/* tanh with < 2e-7 relative error, branch-free (Cephes' tanhf): an odd polynomial below
 * |x| = 0.625, 1 − 2/(e^(2|x|) + 1) above it, where that difference no longer cancels badly. */
static inline float tanh_f32(float x) {
  const float a = fabsf(x), z = x * x;
  const float small =
      ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z + 1.33314422036e-1f) * z -
       3.33332819422e-1f) * z * x + x;
  const float large = copysignf(1.0f - 2.0f / (fast_expf(2.0f * a) + 1.0f), x);
  return a < 0.625f ? small : large;
}

/* erfc(z) for z ≥ 0 with fractional error < 1.2e-7 (Numerical Recipes' erfcc, a Chebyshev fit). */
static inline float erfc_nonnegative(float z) {
  const float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  return t * fast_expf(-z * z - 1.26551223f + t * p);
}

/* The activations, numbered as ACTIVATIONS in src/backend/backend.ts. */
enum { ACTIVATION_SILU, ACTIVATION_GELU, ACTIVATION_GELU_TANH, ACTIVATION_RELU };

/*
 * gelu is the exact x·Φ(x) with Φ(x) = erfc(−x/√2)/2: the erfc form keeps its relative accuracy
 * for negative x, where 1 + erf(x/√2) cancels. gelu_tanh is 0.5·x·(1 + tanh(u)) with
 * u = √(2/π)(x + 0.044715x³), computed as the identical x·sigmoid(2u).
 */
static inline float activate(int kind, float x) {
  switch (kind) {
  case ACTIVATION_SILU:
    return x / (1.0f + fast_expf(-x));
  case ACTIVATION_GELU: {
    const float half_tail = 0.5f * erfc_nonnegative(fabsf(x) * 0.70710678118654752f);
    return x * (x >= 0.0f ? 1.0f - half_tail : half_tail);
  }
  case ACTIVATION_GELU_TANH:
    return x / (1.0f + fast_expf(-1.5957691216057308f * (x + 0.044715f * x * x * x)));
  default:
    return x > 0.0f ? x : 0.0f;
  }
}

/* out[i] = act(x[i])·up[i], or act(x[i]) when up is NULL, for count elements; out may alias x.
 * (The simd pragmas make GCC if-convert the clamps and selects so that every clone vectorizes.) */
static inline __attribute__((always_inline)) void activation_loop(int kind, const float *x, const float *up, float *out,
                                                                  size_t count) {
  if (up) {
#pragma omp simd
    for (size_t i = 0; i < count; i++) out[i] = activate(kind, x[i]) * up[i];
  } else {
#pragma omp simd
    for (size_t i = 0; i < count; i++) out[i] = activate(kind, x[i]);
  }
}

/* activation_loop with one copy per activation, each with a constant kind so that it vectorizes. */
MULTIVERSION static void activation_kernel(int kind, const float *x, const float *up, float *out, size_t count) {
  switch (kind) {
  case ACTIVATION_SILU:
    activation_loop(ACTIVATION_SILU, x, up, out, count);
    break;
  case ACTIVATION_GELU:
    activation_loop(ACTIVATION_GELU, x, up, out, count);
    break;
  case ACTIVATION_GELU_TANH:
    activation_loop(ACTIVATION_GELU_TANH, x, up, out, count);
    break;
  default:
    activation_loop(ACTIVATION_RELU, x, up, out, count);
  }
}

/* x[i] = cap·tanh(x[i]/cap) for count elements (logit soft-capping). */
MULTIVERSION static void soft_cap_kernel(float *x, size_t count, float cap) {
#pragma omp simd
  for (size_t i = 0; i < count; i++) x[i] = cap * tanh_f32(x[i] / cap);
}

/* log Σ exp(row[j]) over row[0:count], stable (shifted by the maximum). */
MULTIVERSION static double log_sum_exp(const float *row, blasint count) {
  float max = row[0];
#pragma omp simd reduction(max : max)
  for (blasint j = 0; j < count; j++) max = row[j] > max ? row[j] : max;
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (blasint j = 0; j < count; j++) sum += fast_expf(row[j] - max);
  return (double)max + log((double)sum);
}

/* ---------- the operations (run on a worker thread or inline) ---------- */

/*
 * One row times a matrix (decoding a token): a matrix-vector product. OpenBLAS 0.3.21's sgemm
 * copies B into its packed layout even for one row, which more than doubles the memory traffic of
 * a product that is nothing but a stream over B; gemv reads B once. Its row of A is strided when A
 * is transposed. BLAS gemv may read y when beta is 0, so y is cleared first (gemm's contract).
 */
static void run_gemv_row(Job *job, blasint n, blasint k, bool trans_a, bool trans_b, double alpha, double beta,
                         blasint lda, blasint ldb) {
  const blasint incx = trans_a ? lda : 1;
  /* op(B) = B (stored k×n) multiplies x from the left: y = Bᵀx; op(B) = Bᵀ (stored n×k): y = Bx. */
  const enum CBLAS_TRANSPOSE trans = trans_b ? CblasNoTrans : CblasTrans;
  const blasint rows = trans_b ? n : k, cols = trans_b ? k : n;
  if (job->fp64) {
    if (beta == 0) memset(job->data[2], 0, sizeof(double) * (size_t)n);
    cblas_dgemv(CblasRowMajor, trans, rows, cols, alpha, job->data[1], ldb, job->data[0], incx, beta, job->data[2], 1);
  } else {
    if (beta == 0) memset(job->data[2], 0, sizeof(float) * (size_t)n);
    cblas_sgemv(CblasRowMajor, trans, rows, cols, (float)alpha, job->data[1], ldb, job->data[0], incx, (float)beta,
                job->data[2], 1);
  }
}

static void run_gemm(Job *job) {
  const blasint m = ARG_INT(job, 0), n = ARG_INT(job, 1), k = ARG_INT(job, 2);
  const enum CBLAS_TRANSPOSE ta = job->args[3] ? CblasTrans : CblasNoTrans;
  const enum CBLAS_TRANSPOSE tb = job->args[4] ? CblasTrans : CblasNoTrans;
  const double alpha = job->args[5], beta = job->args[6];
  const blasint lda = ARG_INT(job, 7), ldb = ARG_INT(job, 8), ldc = ARG_INT(job, 9);
  if (m == 1 && k > 0) {
    run_gemv_row(job, n, k, ta == CblasTrans, tb == CblasTrans, alpha, beta, lda, ldb);
    return;
  }
  if (job->fp64)
    cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, job->data[0], lda, job->data[1], ldb, beta, job->data[2], ldc);
  else
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, (float)alpha, job->data[0], lda, job->data[1], ldb, (float)beta,
                job->data[2], ldc);
}

static void run_syrk(Job *job) {
  const blasint n = ARG_INT(job, 0), d = ARG_INT(job, 1);
  float *h = job->data[1];
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, d, n, (float)job->args[2], job->data[0], d, 1.0f, h, d);
  mirror_upper_f32(h, d);
}

/* Row-major upper U (A = UᵀU) is, read column-major, the lower factor L = Uᵀ: LAPACK's 'L'. */
static void run_cholesky(Job *job) {
  const blasint n = ARG_INT(job, 0);
  const bool upper = job->args[1] != 0;
  const char uplo = upper ? 'L' : 'U';
  blasint info = 0;
  if (job->fp64) {
    dpotrf_(&uplo, &n, job->data[0], &n, &info, 1);
    if (info == 0) zero_triangle_f64(job->data[0], n, upper);
  } else {
    spotrf_(&uplo, &n, job->data[0], &n, &info, 1);
    if (info == 0) zero_triangle_f32(job->data[0], n, upper);
  }
  job->ok = info == 0;
}

/* Factor and invert in LAPACK's column-major lower triangle (= row-major upper), then mirror. */
static void run_invert_spd(Job *job) {
  const blasint n = ARG_INT(job, 0);
  const char uplo = 'L';
  blasint info = 0;
  if (job->fp64) {
    dpotrf_(&uplo, &n, job->data[0], &n, &info, 1);
    if (info == 0) dpotri_(&uplo, &n, job->data[0], &n, &info, 1);
    if (info == 0) mirror_upper_f64(job->data[0], n);
  } else {
    spotrf_(&uplo, &n, job->data[0], &n, &info, 1);
    if (info == 0) spotri_(&uplo, &n, job->data[0], &n, &info, 1);
    if (info == 0) mirror_upper_f32(job->data[0], n);
  }
  job->ok = info == 0;
}

/*
 * Eigenvalues only (jobz 'N'), ascending, of the symmetric n×n matrix in data[0] (destroyed) into
 * data[1]. The matrix is symmetric, so row- and column-major agree. Workspace sizes come from
 * LAPACK's own query (lwork = liwork = −1).
 */
#define DEFINE_RUN_EIGENVALUES(name, type, routine)                                                 \
  static void name(Job *job) {                                                                     \
    const blasint n = ARG_INT(job, 0), query = -1;                                                 \
    const char jobz = 'N', uplo = 'L';                                                             \
    blasint info = 0, iwork_size = 0;                                                              \
    type work_size = 0;                                                                            \
    routine(&jobz, &uplo, &n, job->data[0], &n, job->data[1], &work_size, &query, &iwork_size, &query, &info, 1, 1); \
    const blasint lwork = (blasint)work_size, liwork = iwork_size > 0 ? iwork_size : 1;            \
    type *work = info == 0 ? malloc(sizeof(type) * (size_t)(lwork > 0 ? lwork : 1)) : NULL;        \
    blasint *iwork = info == 0 ? malloc(sizeof(blasint) * (size_t)liwork) : NULL;                 \
    if (info == 0 && (!work || !iwork)) {                                                          \
      job->out_of_memory = true;                                                                   \
    } else if (info == 0) {                                                                        \
      routine(&jobz, &uplo, &n, job->data[0], &n, job->data[1], work, &lwork, iwork, &liwork, &info, 1, 1); \
    }                                                                                              \
    free(work);                                                                                    \
    free(iwork);                                                                                   \
    job->ok = info == 0 && !job->out_of_memory;                                                    \
  }
DEFINE_RUN_EIGENVALUES(run_eigenvalues_f32, float, ssyevd_)
DEFINE_RUN_EIGENVALUES(run_eigenvalues_f64, double, dsyevd_)

static void run_symmetric_eigenvalues(Job *job) {
  if (job->fp64) run_eigenvalues_f64(job);
  else run_eigenvalues_f32(job);
}

static void run_triangular_solve(Job *job) {
  const blasint n = ARG_INT(job, 0), nrhs = ARG_INT(job, 1);
  const enum CBLAS_UPLO uplo = job->args[2] ? CblasUpper : CblasLower;
  const enum CBLAS_TRANSPOSE trans = job->args[3] ? CblasTrans : CblasNoTrans;
  if (job->fp64)
    cblas_dtrsm(CblasRowMajor, CblasLeft, uplo, trans, CblasNonUnit, n, nrhs, 1.0, job->data[0], n, job->data[1], nrhs);
  else
    cblas_strsm(CblasRowMajor, CblasLeft, uplo, trans, CblasNonUnit, n, nrhs, 1.0f, job->data[0], n, job->data[1], nrhs);
}

static double attention_flops(const Job *job) {
  /* per window and head: seqLen query rows × (past + seqLen/2) visible keys on average × 2·headDim */
  const double seq_len = job->args[1], past = job->args[6];
  return job->args[0] * job->args[2] * seq_len * (2.0 * past + seq_len) * job->args[4];
}

/*
 * Causal attention. Work is split into tasks of (window, key/value head, block of ATTENTION_BLOCK
 * query rows). The query heads that share the key/value head (grouped-query attention) are
 * stacked into one block of group·rows rows, so that OpenBLAS packs each key and value row once
 * per block rather than once per query head (packing was a fifth of the attention's time):
 * scores = scale·Q[r0:r1]·K[k0:past+r1]ᵀ (keys after the block's last row are never touched),
 * soft-capped if asked, then per row the numerators e^(s − max) of a causal softmax and their sum;
 * out[r0:r1] = (P·V[k0:past+r1]) / sum, normalising the headDim outputs rather than the keys-wide
 * row (one pass over the scores fewer). `past` keys precede the queries (a KV cache): query row i
 * sits at position p = past + i and sees keys max(0, p − window + 1)..p with a sliding window (k0
 * is the block's first row's first key), 0..p without (window 0, k0 = 0).
 * These GEMMs are too small for OpenBLAS's own threading to pay off, so the tasks are spread over
 * our threads instead (latest, largest query blocks first) with OpenBLAS single-threaded
 * meanwhile; nothing else calls BLAS while a job runs.
 */
#define ATTENTION_BLOCK 128

typedef struct {
  const float *q, *k, *v;
  float *out;
  blasint seq_len, past, num_heads, head_dim, q_width, kv_width, heads_per_kv, q_blocks;
  blasint window; /* sliding window length, 0 for none */
  long pairs, tasks; /* pairs: windows × key/value heads */
  float scale, soft_cap; /* soft_cap 0: none */
  atomic_long next;
} AttentionPlan;

/* One worker's buffers, for heads_per_kv·ATTENTION_BLOCK stacked query rows. */
typedef struct {
  float *queries; /* [stacked rows, head_dim] */
  float *scores;  /* [stacked rows, keys] */
  float *outputs; /* [stacked rows, head_dim] */
  float *sums;    /* [stacked rows]: each row's softmax denominator */
} AttentionScratch;

/* The earliest key the query at `position` sees. */
static blasint first_visible_key(const AttentionPlan *plan, blasint position) {
  return plan->window > 0 && position >= plan->window ? position - plan->window + 1 : 0;
}

/* row[j] ← e^(row[j] − max) over row[0:count], returning their sum: a softmax left unnormalised.
 * The simd pragmas (-fopenmp-simd, no OpenMP runtime) let the reductions be reordered into vector
 * lanes without -ffast-math. */
MULTIVERSION static float softmax_numerators(float *row, blasint count) {
  float max = row[0];
#pragma omp simd reduction(max : max)
  for (blasint j = 0; j < count; j++) max = row[j] > max ? row[j] : max;
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (blasint j = 0; j < count; j++) {
    row[j] = fast_expf(row[j] - max);
    sum += row[j];
  }
  return sum;
}

static void attention_task(const AttentionPlan *plan, long task, const AttentionScratch *scratch) {
  const blasint hd = plan->head_dim, group = plan->heads_per_kv;
  const long pair = task % plan->pairs;
  const blasint q_block = plan->q_blocks - 1 - (blasint)(task / plan->pairs);
  const blasint num_kv_heads = plan->num_heads / group;
  const blasint window = (blasint)(pair / num_kv_heads), kv_head = (blasint)(pair % num_kv_heads);
  const size_t window_row = (size_t)window * plan->seq_len;
  const size_t window_key_row = (size_t)window * (plan->past + plan->seq_len);
  const float *k = plan->k + window_key_row * plan->kv_width + (size_t)kv_head * hd;
  const float *v = plan->v + window_key_row * plan->kv_width + (size_t)kv_head * hd;
  const blasint r0 = q_block * ATTENTION_BLOCK;
  const blasint rows = r0 + ATTENTION_BLOCK <= plan->seq_len ? ATTENTION_BLOCK : plan->seq_len - r0;
  const blasint stacked = group * rows;
  const blasint first_key = first_visible_key(plan, plan->past + r0);
  const blasint keys = plan->past + r0 + rows - first_key; /* also the leading dimension of `scores` */
  k += (size_t)first_key * plan->kv_width;
  v += (size_t)first_key * plan->kv_width;
  /* Stacked row g·rows + i is query row r0 + i of head kv_head·group + g. */
  for (blasint g = 0; g < group; g++) {
    const float *q = plan->q + (window_row + (size_t)r0) * plan->q_width + (size_t)(kv_head * group + g) * hd;
    for (blasint i = 0; i < rows; i++)
      memcpy(scratch->queries + ((size_t)g * rows + i) * hd, q + (size_t)i * plan->q_width, sizeof(float) * (size_t)hd);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, stacked, keys, hd, plan->scale, scratch->queries, hd, k,
              plan->kv_width, 0.0f, scratch->scores, keys);
  for (blasint row = 0; row < stacked; row++) {
    float *scores = scratch->scores + (size_t)row * keys;
    const blasint position = plan->past + r0 + row % rows;
    const blasint skipped = first_visible_key(plan, position) - first_key, visible = position + 1 - first_key - skipped;
    memset(scores, 0, sizeof(float) * (size_t)skipped);
    if (plan->soft_cap > 0) soft_cap_kernel(scores + skipped, (size_t)visible, plan->soft_cap);
    scratch->sums[row] = softmax_numerators(scores + skipped, visible);
    memset(scores + skipped + visible, 0, sizeof(float) * (size_t)(keys - skipped - visible));
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, stacked, hd, keys, 1.0f, scratch->scores, keys, v,
              plan->kv_width, 0.0f, scratch->outputs, hd);
  for (blasint g = 0; g < group; g++) {
    float *out = plan->out + (window_row + (size_t)r0) * plan->q_width + (size_t)(kv_head * group + g) * hd;
    for (blasint i = 0; i < rows; i++) {
      const blasint row = g * rows + i;
      const float inverse_sum = 1.0f / scratch->sums[row];
      const float *from = scratch->outputs + (size_t)row * hd;
      float *to = out + (size_t)i * plan->q_width;
      for (blasint c = 0; c < hd; c++) to[c] = from[c] * inverse_sum;
    }
  }
}

/* Runs `worker(argument)` on `threads` threads, this one included (at most 64; fewer if a thread
 * cannot be created); false if any of them returned NULL (out of memory). */
static bool run_on_threads(void *(*worker)(void *), void *argument, int threads) {
  if (threads > 64) threads = 64;
  pthread_t helpers[64];
  int started = 0;
  while (started < threads - 1 && pthread_create(&helpers[started], NULL, worker, argument) == 0) started++;
  bool ok = worker(argument) != NULL;
  for (int i = 0; i < started; i++) {
    void *result;
    pthread_join(helpers[i], &result);
    ok = ok && result != NULL;
  }
  return ok;
}

static void *attention_worker(void *argument) {
  AttentionPlan *plan = argument;
  const size_t stacked = (size_t)plan->heads_per_kv * ATTENTION_BLOCK, hd = (size_t)plan->head_dim;
  AttentionScratch scratch = {
      .queries = malloc(sizeof(float) * stacked * hd),
      .scores = malloc(sizeof(float) * stacked * (size_t)(plan->past + plan->seq_len)),
      .outputs = malloc(sizeof(float) * stacked * hd),
      .sums = malloc(sizeof(float) * stacked),
  };
  const bool ok = scratch.queries && scratch.scores && scratch.outputs && scratch.sums;
  if (ok)
    for (long task; (task = atomic_fetch_add(&plan->next, 1)) < plan->tasks;) attention_task(plan, task, &scratch);
  free(scratch.queries);
  free(scratch.scores);
  free(scratch.outputs);
  free(scratch.sums);
  return ok ? plan : NULL;
}

static void run_causal_attention(Job *job) {
  AttentionPlan plan = {
      .q = job->data[0], .k = job->data[1], .v = job->data[2], .out = job->data[3],
      .seq_len = ARG_INT(job, 1), .num_heads = ARG_INT(job, 2), .head_dim = ARG_INT(job, 4),
      .scale = (float)job->args[5], .past = ARG_INT(job, 6), .window = ARG_INT(job, 7), .soft_cap = (float)job->args[8],
  };
  const blasint windows = ARG_INT(job, 0), num_kv_heads = ARG_INT(job, 3);
  plan.q_width = plan.num_heads * plan.head_dim;
  plan.kv_width = num_kv_heads * plan.head_dim;
  plan.heads_per_kv = plan.num_heads / num_kv_heads;
  plan.q_blocks = (plan.seq_len + ATTENTION_BLOCK - 1) / ATTENTION_BLOCK;
  plan.pairs = (long)windows * num_kv_heads;
  plan.tasks = plan.pairs * plan.q_blocks;
  atomic_init(&plan.next, 0);
  const int blas_threads = openblas_get_num_threads();
  int threads = blas_threads;
  if (threads < 1 || attention_flops(job) < SYNC_FLOP_THRESHOLD) threads = 1;
  if (threads > plan.tasks) threads = (int)plan.tasks;
  openblas_set_num_threads(1);
  const bool ok = run_on_threads(attention_worker, &plan, threads);
  openblas_set_num_threads(blas_threads);
  if (!ok) job->out_of_memory = true;
}

/* ---------- APT's row elimination ----------
 * The steps of src/backend/row-elimination.ts (derived in src/prune/methods/apt.ts), in the same
 * order of floating-point operations, so both backends give the same weights: per row of a column
 * block, remove weights one at a time (or the best N-subset of each group of M), keeping the Schur
 * complement of Γ on the removed set as Γ minus one factor vector per removal. Rows are
 * independent and are shared among threads. */
typedef struct {
  const double *gamma;
  int size;
  double *factors;  /* size × size: one vector per removal */
  double *residual; /* diagonal of the Schur complement */
  double *schur_row;
  unsigned char *removed;
  double *w;
  int removed_count;
} RowElimination;

static void elimination_reset(RowElimination *e, double *w) {
  e->w = w;
  e->removed_count = 0;
  memset(e->removed, 0, (size_t)e->size);
  for (int i = 0; i < e->size; i++) e->residual[i] = e->gamma[(size_t)i * e->size + i];
}

static int elimination_cheapest(const RowElimination *e, int from, int to) {
  int best = -1;
  double best_cost = INFINITY;
  for (int i = from; i < to; i++) {
    if (e->removed[i]) continue;
    const double cost = e->w[i] * e->w[i] / e->residual[i];
    if (best < 0 || cost < best_cost) {
      best = i;
      best_cost = cost;
    }
  }
  return best;
}

/* Removes weight i, re-fitting the free ones; false if its pivot is not positive. */
static bool elimination_remove(RowElimination *e, int i, double *added) {
  const int size = e->size;
  double *row = e->schur_row;
  memcpy(row, e->gamma + (size_t)i * size, sizeof(double) * (size_t)size);
  for (int t = 0; t < e->removed_count; t++) {
    const double *factor = e->factors + (size_t)t * size;
    const double coefficient = factor[i];
    if (coefficient == 0) continue;
    for (int j = 0; j < size; j++) row[j] -= coefficient * factor[j];
  }
  const double pivot = row[i];
  if (!(pivot > 0)) return false;
  const double ratio = e->w[i] / pivot;
  *added = 0.5 * e->w[i] * ratio;
  const double scale = 1 / sqrt(pivot);
  double *factor = e->factors + (size_t)e->removed_count * size;
  e->removed[i] = 1;
  for (int j = 0; j < size; j++) {
    if (e->removed[j]) {
      e->w[j] = 0;
      factor[j] = 0;
      continue;
    }
    const double value = row[j];
    e->w[j] -= ratio * value;
    const double f = value * scale;
    factor[j] = f;
    e->residual[j] -= f * f;
  }
  e->removed_count++;
  return true;
}

/* vᵀ M_ss⁻¹ v by a small Cholesky factorisation of the principal submatrix; INFINITY if not PD. */
static double inverse_quadratic_form(const double *matrix, int width, const unsigned char *subset, int n, const double *w_group,
                                     double *lower, double *solved) {
  double total = 0;
  for (int i = 0; i < n; i++) {
    for (int j = 0; j <= i; j++) {
      double sum = matrix[subset[i] * width + subset[j]];
      for (int k = 0; k < j; k++) sum -= lower[i * n + k] * lower[j * n + k];
      if (i == j) {
        if (!(sum > 0)) return INFINITY;
        lower[i * n + i] = sqrt(sum);
      } else {
        lower[i * n + j] = sum / lower[j * n + j];
      }
    }
    double y = w_group[subset[i]];
    for (int k = 0; k < i; k++) y -= lower[i * n + k] * solved[k];
    solved[i] = y / lower[i * n + i];
    total += solved[i] * solved[i];
  }
  return total;
}

typedef struct {
  const double *gamma;
  double *block, *losses;
  const double *removals; /* per row, mode 0 */
  int rows, size, mode, n, m;
  const unsigned char *subsets; /* mode 1: count × n, lexicographic */
  long subset_count;
  atomic_long next_row;
  atomic_bool singular;
} EliminationPlan;

static void *elimination_worker(void *argument) {
  EliminationPlan *plan = argument;
  const int size = plan->size, m = plan->m, n = plan->n;
  RowElimination e = {.gamma = plan->gamma, .size = size};
  e.factors = malloc(sizeof(double) * (size_t)size * size);
  e.residual = malloc(sizeof(double) * (size_t)size);
  e.schur_row = malloc(sizeof(double) * (size_t)size);
  e.removed = malloc((size_t)size);
  double *schur = malloc(sizeof(double) * (size_t)m * m + 1);
  double *lower = malloc(sizeof(double) * (size_t)n * n + 1);
  double *solved = malloc(sizeof(double) * (size_t)n + 1);
  void *result = plan;
  if (!e.factors || !e.residual || !e.schur_row || !e.removed || !schur || !lower || !solved) {
    result = NULL;
    goto done;
  }
  for (long r; (r = atomic_fetch_add(&plan->next_row, 1)) < plan->rows && !atomic_load(&plan->singular);) {
    elimination_reset(&e, plan->block + (size_t)r * size);
    double loss = 0, added = 0;
    bool ok = true;
    if (plan->mode == 0) {
      const long count = (long)plan->removals[r];
      for (long k = 0; k < count && ok; k++) {
        ok = elimination_remove(&e, elimination_cheapest(&e, 0, size), &added);
        loss += added;
      }
    } else {
      for (int group = 0; group < size && ok; group += m) {
        if (plan->mode == 2) {
          for (int k = 0; k < n && ok; k++) {
            ok = elimination_remove(&e, elimination_cheapest(&e, group, group + m), &added);
            loss += added;
          }
          continue;
        }
        for (int a = 0; a < m; a++) {
          for (int b = a; b < m; b++) {
            double value = e.gamma[(size_t)(group + a) * size + group + b];
            for (int t = 0; t < e.removed_count; t++) {
              const double *factor = e.factors + (size_t)t * size;
              value -= factor[group + a] * factor[group + b];
            }
            schur[a * m + b] = value;
            schur[b * m + a] = value;
          }
        }
        const unsigned char *best = plan->subsets;
        double best_loss = INFINITY;
        for (long s = 0; s < plan->subset_count; s++) {
          const unsigned char *subset = plan->subsets + s * n;
          const double subset_loss = 0.5 * inverse_quadratic_form(schur, m, subset, n, e.w + group, lower, solved);
          if (subset_loss < best_loss) {
            best = subset;
            best_loss = subset_loss;
          }
        }
        double subset_added = 0; /* summed apart, then added: the reference's order */
        for (int k = 0; k < n && ok; k++) {
          ok = elimination_remove(&e, group + best[k], &added);
          subset_added += added;
        }
        loss += subset_added;
      }
    }
    if (!ok) atomic_store(&plan->singular, true);
    plan->losses[r] = loss;
  }
done:
  free(e.factors), free(e.residual), free(e.schur_row), free(e.removed), free(schur), free(lower), free(solved);
  return result;
}

/* Every n-subset of 0..m−1 in lexicographic order (as row-elimination.ts enumerates them). */
static unsigned char *all_subsets(int m, int n, long *count) {
  long total = 1;
  for (int k = 1; k <= n; k++) total = total * (m - n + k) / k;
  unsigned char *subsets = malloc((size_t)total * n + 1);
  if (!subsets) return NULL;
  unsigned char current[256];
  for (int i = 0; i < n; i++) current[i] = (unsigned char)i;
  for (long s = 0; s < total; s++) {
    memcpy(subsets + s * n, current, (size_t)n);
    int i = n - 1;
    while (i >= 0 && current[i] == m - n + i) i--;
    if (i < 0) break;
    current[i]++;
    for (int j = i + 1; j < n; j++) current[j] = (unsigned char)(current[j - 1] + 1);
  }
  *count = total;
  return subsets;
}

static void run_eliminate_rows(Job *job) {
  EliminationPlan plan = {
      .gamma = job->data[0], .block = job->data[1], .removals = job->data[2], .losses = job->data[3],
      .rows = ARG_INT(job, 0), .size = ARG_INT(job, 1), .mode = ARG_INT(job, 2), .n = ARG_INT(job, 3), .m = ARG_INT(job, 4),
  };
  atomic_init(&plan.next_row, 0);
  atomic_init(&plan.singular, false);
  unsigned char *subsets = NULL;
  if (plan.mode == 1 && !(subsets = all_subsets(plan.m, plan.n, &plan.subset_count))) {
    job->out_of_memory = true;
    return;
  }
  plan.subsets = subsets;
  int threads = openblas_get_num_threads();
  if (threads < 1) threads = 1;
  if (threads > plan.rows) threads = plan.rows;
  const bool ok = run_on_threads(elimination_worker, &plan, threads);
  free(subsets);
  if (!ok) job->out_of_memory = true;
  job->ok = !atomic_load(&plan.singular);
}

/* ---------- N:M channel order refinement ----------
 * src/backend/nm-refinement.ts is the reference and derives the steps; this is the same code in
 * the same floating-point order, so both give the same order bit for bit. What changes is only
 * the order in which independent numbers are computed: the gain sums run GAIN_TILE channels × 2
 * groups side by side (each sum still added in row order), the thresholds 16 rows at a time, and
 * the assignment scans walk lists of columns. Nearly all of the reference's time is the gain
 * sums and the thresholds; here the assignment takes about a third. */

#define GAIN_TILE 16

typedef struct {
  /* solveAssignment's 1-based arrays, for blocks of up to `capacity` groups */
  double *row_potential, *col_potential, *min_slack;
  int *row_of_col, *previous_col, *assignment, *unvisited, *visited;
  /* the block: its groups, thresholds [size, rows], one tile of moving scores [rows, GAIN_TILE],
   * gains [size, size], the channels moving */
  int *members;
  float *thresholds, *moving_scores;
  double *gain;
  uint32_t *moving;
} RefinementWork;

static void free_refinement_work(RefinementWork *w) {
  free(w->row_potential), free(w->col_potential), free(w->min_slack), free(w->row_of_col);
  free(w->previous_col), free(w->assignment), free(w->visited), free(w->members), free(w->thresholds);
  free(w->gain), free(w->moving), free(w->unvisited), free(w->moving_scores);
}

static bool alloc_refinement_work(RefinementWork *w, size_t capacity, size_t rows) {
  const size_t n1 = capacity + 1;
  w->row_potential = malloc(sizeof(double) * n1), w->col_potential = malloc(sizeof(double) * n1);
  w->min_slack = malloc(sizeof(double) * n1), w->row_of_col = malloc(sizeof(int) * n1);
  w->previous_col = malloc(sizeof(int) * n1), w->assignment = malloc(sizeof(int) * n1);
  w->visited = malloc(sizeof(int) * n1), w->unvisited = malloc(sizeof(int) * n1), w->members = malloc(sizeof(int) * n1);
  w->thresholds = malloc(sizeof(float) * capacity * (rows > 0 ? rows : 1));
  w->moving_scores = malloc(sizeof(float) * GAIN_TILE * (rows > 0 ? rows : 1));
  w->gain = malloc(sizeof(double) * capacity * capacity), w->moving = malloc(sizeof(uint32_t) * n1);
  return w->row_potential && w->col_potential && w->min_slack && w->row_of_col && w->previous_col && w->assignment &&
         w->visited && w->unvisited && w->members && w->thresholds && w->moving_scores && w->gain && w->moving;
}

/* solveAssignment(cost, n, maximize = true) into w->assignment. The scans walk lists of the
 * unvisited columns (ascending, as the reference's loop meets them, so ties resolve alike) and of
 * the visited ones instead of testing every column: each column still gets the same operations. */
static void solve_assignment_max(const double *cost, int n, RefinementWork *w) {
  double *row_potential = w->row_potential, *col_potential = w->col_potential, *min_slack = w->min_slack;
  int *row_of_col = w->row_of_col, *previous_col = w->previous_col;
  int *unvisited = w->unvisited, *visited = w->visited;
  for (int i = 0; i <= n; i++) row_potential[i] = col_potential[i] = 0, row_of_col[i] = previous_col[i] = 0;
  for (int row = 1; row <= n; row++) {
    row_of_col[0] = row;
    int col0 = 0;
    for (int col = 0; col <= n; col++) min_slack[col] = INFINITY;
    int unvisited_count = n, visited_count = 0;
    for (int k = 0; k < n; k++) unvisited[k] = k + 1;
    do {
      visited[visited_count++] = col0;
      if (col0 != 0) {
        int k = 0;
        while (unvisited[k] != col0) k++;
        memmove(unvisited + k, unvisited + k + 1, sizeof(int) * (size_t)(unvisited_count - k - 1));
        unvisited_count--;
      }
      const int row0 = row_of_col[col0];
      double delta = INFINITY;
      int next_col = 0;
      const double *cost_row = cost + (size_t)(row0 - 1) * n;
      for (int k = 0; k < unvisited_count; k++) {
        const int col = unvisited[k];
        const double slack = -cost_row[col - 1] - row_potential[row0] - col_potential[col];
        if (slack < min_slack[col]) {
          min_slack[col] = slack;
          previous_col[col] = col0;
        }
        if (min_slack[col] < delta) {
          delta = min_slack[col];
          next_col = col;
        }
      }
      for (int k = 0; k < visited_count; k++) {
        const int col = visited[k];
        row_potential[row_of_col[col]] += delta;
        col_potential[col] -= delta;
      }
      for (int k = 0; k < unvisited_count; k++) min_slack[unvisited[k]] -= delta;
      col0 = next_col;
    } while (row_of_col[col0] != 0);
    do {
      const int col1 = previous_col[col0];
      row_of_col[col0] = row_of_col[col1];
      col0 = col1;
    } while (col0 != 0);
  }
  for (int col = 1; col <= n; col++) w->assignment[row_of_col[col] - 1] = col - 1;
}


/* gain[i, h] = ½ Σ_r max(0, tile[r, i − i0] − thresholds[h, r]) for i in [i0, i0 + width) and
 * h in {h, h + 1}: 2·GAIN_TILE independent sums, each in row order, written ½ Σ (e + |e|) as the
 * reference does. `tile` holds the tile's moving channels [rows, GAIN_TILE]. */
static inline __attribute__((always_inline)) void gain_pair(const float *tile, const float *threshold0,
                                                           const float *threshold1, size_t rows, int size, int i0,
                                                           int width, int h, double *gain) {
  double sums0[GAIN_TILE] = {0}, sums1[GAIN_TILE] = {0};
  for (size_t r = 0; r < rows; r++) {
    const double limit0 = threshold0[r], limit1 = threshold1[r];
    const float *value = tile + r * GAIN_TILE;
    for (int t = 0; t < GAIN_TILE; t++) {
      const double excess0 = (double)value[t] - limit0, excess1 = (double)value[t] - limit1;
      sums0[t] += excess0 + fabs(excess0);
      sums1[t] += excess1 + fabs(excess1);
    }
  }
  for (int t = 0; t < width; t++) {
    gain[(size_t)(i0 + t) * size + h] = 0.5 * sums0[t];
    if (threshold1 != threshold0) gain[(size_t)(i0 + t) * size + h + 1] = 0.5 * sums1[t];
  }
}

/* Rows [i0, i0 + width) of the gain matrix: the tile's moving channels placed in each group. */
MULTIVERSION static void gain_rows(const float *tile, const float *thresholds, size_t rows, int size, int i0, int width,
                                   double *gain) {
  for (int h = 0; h < size; h += 2) {
    const float *threshold0 = thresholds + (size_t)h * rows;
    const float *threshold1 = h + 1 < size ? threshold0 + rows : threshold0;
    gain_pair(tile, threshold0, threshold1, rows, size, i0, width, h, gain);
  }
}

#define THRESHOLD_LANES 16

/* threshold[r0 + l] for l < lanes: the keep-th largest of the group's channels other than
 * `position` in row r0 + l. */
static inline __attribute__((always_inline)) void threshold_lanes(const float *channels, size_t rows,
                                                                 const uint32_t *group, int m, int position, int keep,
                                                                 size_t r0, int lanes, float *threshold) {
  float top[256][THRESHOLD_LANES];
  for (int k = 0; k < keep; k++)
    for (int l = 0; l < THRESHOLD_LANES; l++) top[k][l] = -INFINITY;
  for (int j = 0; j < m; j++) {
    if (j == position) continue;
    const float *source = channels + (size_t)group[j] * rows + r0;
    float value[THRESHOLD_LANES];
    for (int l = 0; l < lanes; l++) value[l] = source[l];
    for (int k = 0; k < keep; k++) {
      for (int l = 0; l < lanes; l++) {
        const float larger = value[l] > top[k][l] ? value[l] : top[k][l];
        value[l] = value[l] > top[k][l] ? top[k][l] : value[l];
        top[k][l] = larger;
      }
    }
  }
  for (int l = 0; l < lanes; l++) threshold[r0 + l] = top[keep - 1][l];
}

MULTIVERSION static void group_thresholds(const float *channels, size_t rows, const uint32_t *group, int m, int position,
                                          int keep, float *threshold) {
  size_t r0 = 0;
  for (; r0 + THRESHOLD_LANES <= rows; r0 += THRESHOLD_LANES)
    threshold_lanes(channels, rows, group, m, position, keep, r0, THRESHOLD_LANES, threshold);
  if (r0 < rows) threshold_lanes(channels, rows, group, m, position, keep, r0, (int)(rows - r0), threshold);
}

/* refinePosition: reassigns the channels at `position` among the w->members[0, size) groups. */
static double refine_position(const float *channels, size_t rows, uint32_t *order, int n, int m, int position, int size,
                              RefinementWork *w) {
  const int keep = m - n;
  const int *members = w->members;
  /* t_hr (thresholds [size, rows]): the reference's sorted others[keep − 1], a value whatever
   * the method, here by a branch-free top-keep insertion over THRESHOLD_LANES rows at once. */
  for (int h = 0; h < size; h++)
    group_thresholds(channels, rows, order + (size_t)members[h] * m, m, position, keep, w->thresholds + (size_t)h * rows);
  /* The moving channels GAIN_TILE at a time side by side (tile [rows, GAIN_TILE], zero-padded),
   * so that one threshold meets GAIN_TILE of them at once. Scores stay fp32 (as stored) and
   * widen to fp64 where the reference's arithmetic does. */
  for (int i0 = 0; i0 < size; i0 += GAIN_TILE) {
    const int width = i0 + GAIN_TILE < size ? GAIN_TILE : size - i0;
    float *tile = w->moving_scores;
    memset(tile, 0, sizeof(float) * rows * GAIN_TILE);
    for (size_t r = 0; r < rows; r++)
      for (int t = 0; t < width; t++)
        tile[r * GAIN_TILE + t] = channels[(size_t)order[(size_t)members[i0 + t] * m + position] * rows + r];
    gain_rows(tile, w->thresholds, rows, size, i0, width, w->gain);
  }
  solve_assignment_max(w->gain, size, w);
  double current = 0, best = 0;
  for (int i = 0; i < size; i++) {
    current += w->gain[(size_t)i * size + i];
    best += w->gain[(size_t)i * size + w->assignment[i]];
  }
  if (!(best > current * (1 + 1e-12) + 1e-30)) return 0;
  for (int i = 0; i < size; i++) w->moving[i] = order[(size_t)members[i] * m + position];
  for (int i = 0; i < size; i++) order[(size_t)members[w->assignment[i]] * m + position] = w->moving[i];
  return best - current;
}

/* blockMembers into w->members; returns their count. */
static int block_members(int block, int block_count, int groups, bool strided, RefinementWork *w) {
  int count = 0;
  if (strided) {
    for (int g = block; g < groups; g += block_count) w->members[count++] = g;
  } else {
    const int start = (int)((long long)block * groups / block_count);
    const int end = (int)((long long)(block + 1) * groups / block_count);
    for (int g = start; g < end; g++) w->members[count++] = g;
  }
  return count;
}

/* refineNmOrderReference; data: channels [cols, rows] f32, order u32 (in place), rounds f64 (out). */
static void run_refine_nm_order(Job *job) {
  const float *channels = job->data[0];
  uint32_t *order = job->data[1];
  const size_t rows = (size_t)job->args[0];
  const int cols = (int)job->args[1], n = (int)job->args[2], m = (int)job->args[3];
  const int block_groups = (int)job->args[4], max_rounds = (int)job->args[5];
  double kept = job->args[6];
  const int groups = cols / m;
  const int block_count = (groups + block_groups - 1) / block_groups;
  const int idle_rounds_to_stop = block_count == 1 ? 1 : 2;
  const size_t capacity = block_count > 0 ? (size_t)(groups + block_count - 1) / block_count : 0;
  RefinementWork work = {0};
  if (!alloc_refinement_work(&work, capacity, rows)) {
    free_refinement_work(&work);
    job->out_of_memory = true;
    return;
  }
  int idle_rounds = 0, rounds = 0;
  while (rounds < max_rounds && idle_rounds < idle_rounds_to_stop) {
    const bool strided = rounds % 2 == 0;
    double round_gain = 0;
    for (int position = 0; position < m; position++) {
      for (int block = 0; block < block_count; block++) {
        const int size = block_members(block, block_count, groups, strided, &work);
        round_gain += refine_position(channels, rows, order, n, m, position, size, &work);
      }
    }
    rounds++;
    kept += round_gain;
    idle_rounds = round_gain > kept * 1e-4 ? 0 : idle_rounds + 1;
  }
  free_refinement_work(&work);
  ((double *)job->data[2])[0] = rounds;
}

/* out[r] = log softmax(logits[r, :])[targets[r]]: the log-likelihood of each row's target token. */
static void run_token_log_probs(Job *job) {
  const float *logits = job->data[0];
  const int32_t *targets = job->data[1];
  double *out = job->data[2];
  const blasint vocab = ARG_INT(job, 0);
  const size_t rows = job->lengths[1];
  for (size_t r = 0; r < rows; r++) {
    const float *row = logits + r * (size_t)vocab;
    out[r] = (double)row[targets[r]] - log_sum_exp(row, vocab);
  }
}

/* x [rows, cols], weight [cols]: out[r, :] = (offset + weight) ⊙ x[r, :] / sqrt(mean(x[r, :]²) + eps) (RMSNorm). */
MULTIVERSION static void rms_norm_kernel(const float *x, const float *weight, float *out, size_t rows, size_t cols, float eps,
                                         float offset) {
  for (size_t r = 0; r < rows; r++) {
    const float *row = x + r * cols;
    float sum_squares = 0;
#pragma omp simd reduction(+ : sum_squares)
    for (size_t c = 0; c < cols; c++) sum_squares += row[c] * row[c];
    const float scale = 1.0f / sqrtf(sum_squares / (float)cols + eps);
    float *out_row = out + r * cols;
#pragma omp simd
    for (size_t c = 0; c < cols; c++) out_row[c] = (offset + weight[c]) * (row[c] * scale);
  }
}

/* x [rows, cols], weight and bias (NULL: none) [cols]: out[r, :] = (x[r, :] − mean) / sqrt(var + eps) ⊙ weight + bias
 * (LayerNorm, biased variance). Two passes over the row, so the variance does not cancel, summed in
 * double: a float sum of a row far from zero puts the mean off by a visible fraction of the spread. */
MULTIVERSION static void layer_norm_kernel(const float *x, const float *weight, const float *bias, float *out, size_t rows,
                                           size_t cols, float eps) {
  for (size_t r = 0; r < rows; r++) {
    const float *row = x + r * cols;
    double sum = 0;
#pragma omp simd reduction(+ : sum)
    for (size_t c = 0; c < cols; c++) sum += row[c];
    const float mean = (float)(sum / (double)cols);
    double sum_squares = 0;
#pragma omp simd reduction(+ : sum_squares)
    for (size_t c = 0; c < cols; c++) sum_squares += (double)(row[c] - mean) * (row[c] - mean);
    const float scale = (float)(1.0 / sqrt(sum_squares / (double)cols + eps));
    float *out_row = out + r * cols;
#pragma omp simd
    for (size_t c = 0; c < cols; c++) out_row[c] = (row[c] - mean) * scale * weight[c] + (bias ? bias[c] : 0.0f);
  }
}

/* y [rows, cols] += bias [cols], row by row. */
MULTIVERSION static void add_bias_kernel(float *y, const float *bias, size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; r++) {
#pragma omp simd
    for (size_t c = 0; c < cols; c++) y[r * cols + c] += bias[c];
  }
}

/* a[i] += b[i] for count elements. */
MULTIVERSION static void add_kernel(float *a, const float *b, size_t count) {
#pragma omp simd
  for (size_t i = 0; i < count; i++) a[i] += b[i];
}

/* One RoPE pair: (a, b) ← (a·cos − b·sin, b·cos + a·sin), in double and rounded once, so that it
 * agrees bit for bit with src/model/rope.ts's applyRope (float products are exact in double). */
static inline void rotate_pair(float *a, float *b, float cos_angle, float sin_angle) {
  const double x1 = *a, x2 = *b;
  *a = (float)(x1 * cos_angle - x2 * sin_angle);
  *b = (float)(x2 * cos_angle + x1 * sin_angle);
}

/*
 * RoPE in place on x [rows, heads·head_dim]; cos/sin [positions, rotary_dim/2]. Row r is at
 * position first_position + r % seq_len. Pair i of each head's first rotary_dim features is
 * (i, i + rotary_dim/2) in the rotate-half layout, (2i, 2i + 1) interleaved.
 */
MULTIVERSION static void rope_kernel(float *x, const float *cos_table, const float *sin_table, size_t rows, size_t heads,
                                     size_t head_dim, size_t rotary_dim, size_t seq_len, size_t first_position,
                                     bool interleaved) {
  const size_t pairs = rotary_dim / 2;
  for (size_t r = 0; r < rows; r++) {
    const float *cos_row = cos_table + (first_position + r % seq_len) * pairs;
    const float *sin_row = sin_table + (first_position + r % seq_len) * pairs;
    for (size_t h = 0; h < heads; h++) {
      float *head = x + (r * heads + h) * head_dim;
      if (interleaved) {
        for (size_t i = 0; i < pairs; i++) rotate_pair(head + 2 * i, head + 2 * i + 1, cos_row[i], sin_row[i]);
      } else {
        for (size_t i = 0; i < pairs; i++) rotate_pair(head + i, head + pairs + i, cos_row[i], sin_row[i]);
      }
    }
  }
}

/*
 * Causal depthwise conv1d over time (Mamba), see Backend.causalConv1d: x, out [windows·seq_len,
 * channels], weight [channels, kernel], history [windows·(kernel − 1), channels] the inputs before
 * each window. Channels are the inner loop, so each tap is a vectorized row update.
 */
MULTIVERSION static void causal_conv1d_kernel(const float *x, const float *weight, const float *bias, const float *history,
                                              float *out, size_t windows, size_t seq_len, size_t channels, size_t kernel) {
  const size_t past = kernel - 1;
  for (size_t w = 0; w < windows; w++) {
    for (size_t t = 0; t < seq_len; t++) {
      float *row = out + (w * seq_len + t) * channels;
      for (size_t c = 0; c < channels; c++) row[c] = bias ? bias[c] : 0.0f;
      for (size_t j = 0; j < kernel; j++) {
        /* Tap j reads time t − past + j: from the history while that is negative. */
        const float *input = t + j < past ? history + (w * past + t + j) * channels
                                          : x + (w * seq_len + t + j - past) * channels;
#pragma omp simd
        for (size_t c = 0; c < channels; c++) row[c] += weight[c * kernel + j] * input[c];
      }
    }
  }
}

/* PyTorch's softplus (beta 1, threshold 20). */
static inline float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

/*
 * Mamba's selective scan, see Backend.selectiveScan. The state of one channel is state_size
 * contiguous floats, so the update over n vectorizes; positions run in order (the recurrence).
 */
MULTIVERSION static void selective_scan_kernel(const float *x, const float *delta, const float *a, const float *b,
                                               const float *cmat, const float *d, float *state, float *out, size_t windows,
                                               size_t seq_len, size_t channels, size_t state_size) {
  for (size_t w = 0; w < windows; w++) {
    for (size_t t = 0; t < seq_len; t++) {
      const size_t row = w * seq_len + t;
      const float *b_row = b + row * state_size;
      const float *c_row = cmat + row * state_size;
      for (size_t c = 0; c < channels; c++) {
        const float step = softplus(delta[row * channels + c]);
        const float input = x[row * channels + c];
        const float *a_row = a + c * state_size;
        float *s = state + (w * channels + c) * state_size;
        float y = 0;
#pragma omp simd reduction(+ : y)
        for (size_t n = 0; n < state_size; n++) {
          s[n] = fast_expf(step * a_row[n]) * s[n] + step * b_row[n] * input;
          y += c_row[n] * s[n];
        }
        out[row * channels + c] = y + d[c] * input;
      }
    }
  }
}

static size_t rows_of(const Job *job, size_t matrix, size_t vector) {
  return job->lengths[vector] == 0 ? 0 : job->lengths[matrix] / job->lengths[vector];
}

/*
 * Splits [0, count) into pieces of `grain` and runs `range` on them over the backend's thread count
 * (OpenBLAS's setting; the calling thread takes a share): the elementwise passes between the GEMMs
 * would otherwise run on one core while the others idle. Pieces are independent and each is
 * computed exactly as on one thread, so results do not depend on the thread count.
 */
typedef void (*RangeRun)(const Job *job, size_t begin, size_t end);

typedef struct {
  RangeRun range;
  const Job *job;
  size_t count, grain;
  atomic_size_t next;
} ParallelRange;

static void *parallel_range_worker(void *argument) {
  ParallelRange *work = argument;
  for (size_t begin; (begin = atomic_fetch_add(&work->next, work->grain)) < work->count;)
    work->range(work->job, begin, begin + work->grain < work->count ? begin + work->grain : work->count);
  return work;
}

static void parallel_for(const Job *job, RangeRun range, size_t count, size_t grain) {
  int threads = openblas_get_num_threads();
  const size_t pieces = (count + grain - 1) / grain;
  if (threads > (int)pieces) threads = (int)pieces;
  if (threads <= 1) {
    range(job, 0, count);
    return;
  }
  ParallelRange work = {.range = range, .job = job, .count = count, .grain = grain};
  atomic_init(&work.next, 0);
  run_on_threads(parallel_range_worker, &work, threads);
}

/* Pieces of about this many floats: large enough that a thread's start-up is small beside them. */
#define PARALLEL_GRAIN_ELEMENTS 65536

static size_t grain_rows(size_t cols) { return cols >= PARALLEL_GRAIN_ELEMENTS ? 1 : PARALLEL_GRAIN_ELEMENTS / (cols ? cols : 1); }

static void rms_norm_rows(const Job *job, size_t begin, size_t end) {
  const size_t cols = job->lengths[1];
  rms_norm_kernel((const float *)job->data[0] + begin * cols, job->data[1], (float *)job->data[2] + begin * cols, end - begin,
                  cols, (float)job->args[0], (float)job->args[1]);
}

static void run_rms_norm(Job *job) { parallel_for(job, rms_norm_rows, rows_of(job, 0, 1), grain_rows(job->lengths[1])); }

static void run_layer_norm(Job *job) {
  const float *bias = job->lengths[2] > 0 ? job->data[2] : NULL;
  layer_norm_kernel(job->data[0], job->data[1], bias, job->data[3], rows_of(job, 0, 1), job->lengths[1], (float)job->args[0]);
}

/*
 * The activation loops with denormal results flushed to zero. Vectorized, the clamps in fast_expf
 * become two computed sides blended by a mask, and for silu and gelu_tanh the clamped side divides
 * every lane by 1 + e^88, which for ordinary x is a denormal: each such vector costs a microcode
 * assist of ~150 cycles, making the loop 4–5× slower than its arithmetic. Flushing them (MXCSR.FTZ,
 * this thread, for this loop only) changes only results below 1.2e-38 in magnitude, which become 0.
 */
static void activation_flushing_denormals(int kind, const float *x, const float *up, float *out, size_t count) {
#if defined(__SSE__)
  const unsigned int saved = _mm_getcsr();
  _mm_setcsr(saved | _MM_FLUSH_ZERO_ON);
  activation_kernel(kind, x, up, out, count);
  _mm_setcsr(saved);
#else
  activation_kernel(kind, x, up, out, count);
#endif
}

static void activation_elements(const Job *job, size_t begin, size_t end) {
  activation_flushing_denormals(ARG_INT(job, 0), (const float *)job->data[0] + begin, NULL, (float *)job->data[1] + begin,
                                end - begin);
}

static void gated_activation_elements(const Job *job, size_t begin, size_t end) {
  activation_flushing_denormals(ARG_INT(job, 0), (const float *)job->data[0] + begin, (const float *)job->data[1] + begin,
                                (float *)job->data[2] + begin, end - begin);
}

static void run_activation(Job *job) { parallel_for(job, activation_elements, job->lengths[0], PARALLEL_GRAIN_ELEMENTS); }

static void run_gated_activation(Job *job) {
  parallel_for(job, gated_activation_elements, job->lengths[0], PARALLEL_GRAIN_ELEMENTS);
}

static void run_add_bias(Job *job) { add_bias_kernel(job->data[0], job->data[1], rows_of(job, 0, 1), job->lengths[1]); }

static void add_elements(const Job *job, size_t begin, size_t end) {
  add_kernel((float *)job->data[0] + begin, (const float *)job->data[1] + begin, end - begin);
}

static void run_add(Job *job) { parallel_for(job, add_elements, job->lengths[0], PARALLEL_GRAIN_ELEMENTS); }

static void run_soft_cap(Job *job) { soft_cap_kernel(job->data[0], job->lengths[0], (float)job->args[0]); }

static void run_rope(Job *job) {
  rope_kernel(job->data[0], job->data[1], job->data[2], (size_t)job->args[0], (size_t)job->args[1], (size_t)job->args[2],
              (size_t)job->args[3], (size_t)job->args[4], (size_t)job->args[5], job->args[6] != 0);
}

/* ---------- sparse weights: y = x·Wᵀ with W compressed ----------
 *
 * W [rows, cols] is stored as, per row, one 16-bit mask for every 16 columns (bit j of mask c is
 * column 16c + j, least significant bit first, so a mask is directly an AVX-512 __mmask16) and the
 * row's nonzero values packed in column order, row r starting at values[row_offsets[r]]. The 2:4
 * form is the same layout with exactly two bits set in every group of four columns, hence eight
 * values per full mask: the value pointer then advances by a constant, with no popcount in the
 * loop-carried chain. (Two-bit indices would cost the same bit per weight and need a permute
 * table to decode; the mask feeds VEXPANDPS as it is.)
 *
 * AVX-512 expands the packed values into the 16 lanes of their columns in one instruction
 * (VEXPANDPS with the mask register; masked loads of x never touch columns past the end). AVX2 has
 * no expand: each half-mask of 8 columns indexes a permutation table for VPERMPS, whose sign
 * bits then clear the lanes outside the mask. A scalar loop serves other CPUs. Which one runs is
 * chosen once from the CPU (`sparseIsa` can force a lesser one, so tests reach every path on one
 * machine).
 *
 * One row of x (decoding) or a few: a direct kernel that reads W once per four rows of x. Many
 * rows (prefill): W is unpacked into a dense panel a block of rows at a time and multiplied by
 * OpenBLAS's sgemm, which is as fast as dense minus the unpacking (a direct kernel cannot match a
 * tuned GEMM's register blocking). Work is split over a small pool of persistent threads: a GEMV
 * lasts tens of microseconds, less than creating a thread.
 */
#define SPARSE_CHUNK 16
/* Decoding reads the values this far ahead (1 KiB): from memory, 70% sparse rows ran 15% faster. */
#define SPARSE_PREFETCH_FLOATS 256
/* Up to this many rows of x the direct kernel runs, above it unpack + sgemm (at 512 rows of a
 * 1536×576 matrix the direct kernel took 2.7× as long; the crossover itself is not tuned). */
#define SPARSE_DIRECT_MAX_ROWS 8
/* The unpacked panel holds at most this many floats (4 MiB): smaller panels that stay in L2 made
 * the unpacking cheaper but the sgemm calls per panel cost more, at 512 rows. */
#define SPARSE_PANEL_FLOATS (1 << 20)

enum { SPARSE_ISA_SCALAR, SPARSE_ISA_AVX2, SPARSE_ISA_AVX512 };
static const char *const SPARSE_ISA_NAMES[] = {"scalar", "avx2", "avx512"};

typedef struct {
  const float *x;
  float *y;
  const uint16_t *masks;
  const float *values;
  const int32_t *row_offsets;
  size_t values_length;
  blasint m, rows, cols, chunks;
  int fixed;    /* values per full 16-column mask in the 2:4 form (8); 0: count them */
  float *panel; /* prefill: unpacked rows [panel_first, panel_first + panel_rows), row stride chunks·16 */
  blasint panel_first, panel_rows;
} SparsePlan;

/* ---- portable scalar path ---- */

static void sparse_direct_scalar(const SparsePlan *s, blasint r0, blasint r1) {
  for (blasint i = 0; i < s->m; i++) {
    const float *x = s->x + (size_t)i * s->cols;
    for (blasint r = r0; r < r1; r++) {
      const float *p = s->values + s->row_offsets[r];
      const uint16_t *masks = s->masks + (size_t)r * s->chunks;
      float sum = 0;
      for (blasint c = 0; c < s->chunks; c++)
        for (unsigned bits = masks[c]; bits; bits &= bits - 1) sum += *p++ * x[c * SPARSE_CHUNK + __builtin_ctz(bits)];
      s->y[(size_t)i * s->rows + r] = sum;
    }
  }
}

static void sparse_unpack_scalar(const SparsePlan *s, blasint r0, blasint r1) {
  const size_t ld = (size_t)s->chunks * SPARSE_CHUNK;
  for (blasint r = r0; r < r1; r++) {
    const float *p = s->values + s->row_offsets[r];
    float *dst = s->panel + (size_t)(r - s->panel_first) * ld;
    memset(dst, 0, sizeof(float) * ld);
    for (blasint c = 0; c < s->chunks; c++)
      for (unsigned bits = s->masks[(size_t)r * s->chunks + c]; bits; bits &= bits - 1)
        dst[c * SPARSE_CHUNK + __builtin_ctz(bits)] = *p++;
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SPARSE_X86 1
#define TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,popcnt,fma,bmi,bmi2")))
#define TARGET_AVX2 __attribute__((target("avx2,fma,popcnt,bmi,bmi2")))
#define INLINE static inline __attribute__((always_inline))

/* ---- AVX-512 ---- */

/*
 * Decoding (one row of x): rows r..r+3 of W, one after the other so that the values and masks
 * are read as one stream (interleaving the four rows' streams was faster from cache but slower
 * from memory), each row summed in four accumulators taking turns (independent FMA chains), and
 * the four rows' sums reduced together: a reduction per row costs as much as a third of a
 * 576-wide row.
 */
TARGET_AVX512 INLINE void gemv_four_rows_avx512(const SparsePlan *s, blasint r, const float *x, float *y, int fixed) {
  const blasint full = s->cols / SPARSE_CHUNK;
  __m256 half[4];
  for (int j = 0; j < 4; j++) {
    const float *p = s->values + s->row_offsets[r + j];
    const uint16_t *masks = s->masks + (size_t)(r + j) * s->chunks;
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    blasint c = 0;
    for (; c + 4 <= full; c += 4) {
      _mm_prefetch((const char *)(p + SPARSE_PREFETCH_FLOATS), _MM_HINT_T0);
      for (int t = 0; t < 4; t++) {
        const __mmask16 m = masks[c + t];
        acc[t] = _mm512_fmadd_ps(_mm512_maskz_expandloadu_ps(m, p), _mm512_loadu_ps(x + (size_t)(c + t) * SPARSE_CHUNK), acc[t]);
        p += fixed ? fixed : __builtin_popcount(m);
      }
    }
    for (; c < s->chunks; c++) {
      const __mmask16 m = masks[c];
      acc[0] = _mm512_fmadd_ps(_mm512_maskz_expandloadu_ps(m, p), _mm512_maskz_loadu_ps(m, x + (size_t)c * SPARSE_CHUNK), acc[0]);
      p += __builtin_popcount(m);
    }
    const __m512 sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    half[j] = _mm256_add_ps(_mm512_castps512_ps256(sum), _mm512_extractf32x8_ps(sum, 1));
  }
  /* [a b c d] from four vectors of eight partial sums */
  const __m256 pairs = _mm256_hadd_ps(_mm256_hadd_ps(half[0], half[1]), _mm256_hadd_ps(half[2], half[3]));
  _mm_storeu_ps(y + r, _mm_add_ps(_mm256_castps256_ps128(pairs), _mm256_extractf128_ps(pairs, 1)));
}

/*
 * Rows [r0, r1) of W against `count` (≤ 4) rows of x from x0; `fixed` as in SparsePlan. Each x row
 * sums into 4/count accumulators taking turns over the chunks, so that four independent FMA chains
 * hide the FMA latency also when decoding one row. The expanding load reads only the values
 * present; columns of x past the last full chunk are read under the mask.
 */
TARGET_AVX512 INLINE void direct_block_avx512(const SparsePlan *s, blasint r0, blasint r1, const float *x0, float *y0,
                                              int count, int fixed) {
  const size_t ldx = (size_t)s->cols;
  const blasint full = s->cols / SPARSE_CHUNK;
  const int turns = 4 / count;
  if (count == 1)
    for (; r0 + 4 <= r1; r0 += 4) gemv_four_rows_avx512(s, r0, x0, y0, fixed);
  for (blasint r = r0; r < r1; r++) {
    const float *p = s->values + s->row_offsets[r];
    const uint16_t *masks = s->masks + (size_t)r * s->chunks;
    __m512 acc[4][4];
    for (int i = 0; i < count; i++)
      for (int t = 0; t < turns; t++) acc[i][t] = _mm512_setzero_ps();
    blasint c = 0;
    for (; c + turns <= full; c += turns) {
      for (int t = 0; t < turns; t++) {
        const __mmask16 m = masks[c + t];
        const __m512 w = _mm512_maskz_expandloadu_ps(m, p);
        p += fixed ? fixed : __builtin_popcount(m);
        for (int i = 0; i < count; i++)
          acc[i][t] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x0 + i * ldx + (size_t)(c + t) * SPARSE_CHUNK), acc[i][t]);
      }
    }
    for (; c < s->chunks; c++) {
      const __mmask16 m = masks[c];
      const __m512 w = _mm512_maskz_expandloadu_ps(m, p);
      p += fixed ? fixed : __builtin_popcount(m);
      for (int i = 0; i < count; i++)
        acc[i][0] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m, x0 + i * ldx + (size_t)c * SPARSE_CHUNK), acc[i][0]);
    }
    for (int i = 0; i < count; i++) {
      for (int t = 1; t < turns; t++) acc[i][0] = _mm512_add_ps(acc[i][0], acc[i][t]);
      y0[(size_t)i * s->rows + r] = _mm512_reduce_add_ps(acc[i][0]);
    }
  }
}

/* Every (count, fixed) pair a constant, so that each copy keeps its accumulators in registers. */
#define DIRECT_CASES(isa, fixed)                                                                   \
  switch (count) {                                                                                 \
  case 1: direct_block_##isa(s, r0, r1, x, y, 1, fixed); break;                                   \
  case 2: direct_block_##isa(s, r0, r1, x, y, 2, fixed); break;                                   \
  case 3: direct_block_##isa(s, r0, r1, x, y, 3, fixed); break;                                   \
  default: direct_block_##isa(s, r0, r1, x, y, 4, fixed);                                         \
  }
#define DEFINE_DIRECT(isa)                                                                         \
  static void sparse_direct_##isa(const SparsePlan *s, blasint r0, blasint r1) {                  \
    for (blasint i = 0; i < s->m; i += 4) {                                                        \
      const float *x = s->x + (size_t)i * s->cols;                                                 \
      float *y = s->y + (size_t)i * s->rows;                                                       \
      const int count = s->m - i < 4 ? (int)(s->m - i) : 4;                                        \
      if (s->fixed) {                                                                              \
        DIRECT_CASES(isa, SPARSE_CHUNK / 2)                                                        \
      } else {                                                                                     \
        DIRECT_CASES(isa, 0)                                                                       \
      }                                                                                            \
    }                                                                                              \
  }

TARGET_AVX512 DEFINE_DIRECT(avx512)

TARGET_AVX512 static void sparse_unpack_avx512(const SparsePlan *s, blasint r0, blasint r1) {
  const size_t ld = (size_t)s->chunks * SPARSE_CHUNK;
  for (blasint r = r0; r < r1; r++) {
    const float *p = s->values + s->row_offsets[r];
    const uint16_t *masks = s->masks + (size_t)r * s->chunks;
    float *dst = s->panel + (size_t)(r - s->panel_first) * ld;
    for (blasint c = 0; c < s->chunks; c++) {
      _mm512_storeu_ps(dst + (size_t)c * SPARSE_CHUNK, _mm512_maskz_expandloadu_ps(masks[c], p));
      p += __builtin_popcount(masks[c]);
    }
  }
}

/* ---- AVX2 ---- */

/* For each 8-bit mask: the VPERMPS indices that move the packed values to their lanes, with the
 * sign bit set in the lanes of the mask (VPERMPS reads only the low three bits; the sign bits
 * serve as the blend and masked-load mask). */
static int32_t expand_permutation[256][8];
/* prefix_lanes[k]: the first k lanes set (a VMASKMOVPS mask). */
static int32_t prefix_lanes[9][8];
static pthread_once_t avx2_tables_once = PTHREAD_ONCE_INIT;

static void init_avx2_tables(void) {
  for (int mask = 0; mask < 256; mask++) {
    int next = 0;
    for (int lane = 0; lane < 8; lane++) expand_permutation[mask][lane] = mask >> lane & 1 ? (int32_t)(next++ | INT32_MIN) : 0;
  }
  for (int k = 0; k <= 8; k++)
    for (int lane = 0; lane < 8; lane++) prefix_lanes[k][lane] = lane < k ? -1 : 0;
}

/* The values of one half-mask in their lanes, zeros elsewhere; `permutation` its table row. With
 * `room`, 8 floats may be read from p; otherwise only the `present` ones are. */
TARGET_AVX2 INLINE __m256 expand8_avx2(__m256i permutation, const float *p, int present, bool room) {
  const __m256 packed = room ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, _mm256_loadu_si256((const __m256i *)prefix_lanes[present]));
  return _mm256_blendv_ps(_mm256_setzero_ps(), _mm256_permutevar8x32_ps(packed, permutation), _mm256_castsi256_ps(permutation));
}

/* As gemv_four_rows_avx512, with two half-masks of 8 columns per mask. */
TARGET_AVX2 INLINE void gemv_four_rows_avx2(const SparsePlan *s, blasint r, const float *x, float *y, int fixed) {
  const blasint full = s->cols / 8, halves = 2 * s->chunks;
  __m256 sums[4];
  for (int j = 0; j < 4; j++) {
    const float *p = s->values + s->row_offsets[r + j];
    const uint8_t *masks = (const uint8_t *)(s->masks + (size_t)(r + j) * s->chunks);
    const bool room = (size_t)s->row_offsets[r + j] + (size_t)s->chunks * SPARSE_CHUNK <= s->values_length;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    blasint c = 0;
    for (; c + 4 <= full; c += 4) {
      _mm_prefetch((const char *)(p + SPARSE_PREFETCH_FLOATS), _MM_HINT_T0);
      for (int t = 0; t < 4; t++) {
        const unsigned mask8 = masks[c + t];
        const int present = __builtin_popcount(mask8);
        const __m256i permutation = _mm256_loadu_si256((const __m256i *)expand_permutation[mask8]);
        acc[t] = _mm256_fmadd_ps(expand8_avx2(permutation, p, present, room), _mm256_loadu_ps(x + (size_t)(c + t) * 8), acc[t]);
        p += fixed ? fixed / 2 : present;
      }
    }
    for (; c < halves; c++) {
      const unsigned mask8 = masks[c];
      const int present = __builtin_popcount(mask8);
      const __m256i permutation = _mm256_loadu_si256((const __m256i *)expand_permutation[mask8]);
      acc[0] = _mm256_fmadd_ps(expand8_avx2(permutation, p, present, false), _mm256_maskload_ps(x + (size_t)c * 8, permutation), acc[0]);
      p += present;
    }
    sums[j] = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
  }
  const __m256 pairs = _mm256_hadd_ps(_mm256_hadd_ps(sums[0], sums[1]), _mm256_hadd_ps(sums[2], sums[3]));
  _mm_storeu_ps(y + r, _mm_add_ps(_mm256_castps256_ps128(pairs), _mm256_extractf128_ps(pairs, 1)));
}

/* As direct_block_avx512, with two half-masks of 8 columns per mask. A row whose values are
 * followed by at least a row's width of the array (all but the last few) reads 8 of them with a
 * plain load; the others load only those present. */
TARGET_AVX2 INLINE void direct_block_avx2(const SparsePlan *s, blasint r0, blasint r1, const float *x0, float *y0,
                                          int count, int fixed) {
  const size_t ldx = (size_t)s->cols;
  const blasint full = s->cols / 8, halves = 2 * s->chunks;
  const int turns = 4 / count;
  if (count == 1)
    for (; r0 + 4 <= r1; r0 += 4) gemv_four_rows_avx2(s, r0, x0, y0, fixed);
  for (blasint r = r0; r < r1; r++) {
    const float *p = s->values + s->row_offsets[r];
    const uint8_t *masks = (const uint8_t *)(s->masks + (size_t)r * s->chunks); /* little-endian: low half first */
    const bool room = (size_t)s->row_offsets[r] + (size_t)s->chunks * SPARSE_CHUNK <= s->values_length;
    __m256 acc[4][4];
    for (int i = 0; i < count; i++)
      for (int t = 0; t < turns; t++) acc[i][t] = _mm256_setzero_ps();
    blasint c = 0;
    for (; c + turns <= full; c += turns) {
      for (int t = 0; t < turns; t++) {
        const unsigned mask8 = masks[c + t];
        const int present = __builtin_popcount(mask8);
        const __m256 w = expand8_avx2(_mm256_loadu_si256((const __m256i *)expand_permutation[mask8]), p, present, room);
        p += fixed ? fixed / 2 : present;
        for (int i = 0; i < count; i++)
          acc[i][t] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x0 + i * ldx + (size_t)(c + t) * 8), acc[i][t]);
      }
    }
    for (; c < halves; c++) {
      const unsigned mask8 = masks[c];
      const int present = __builtin_popcount(mask8);
      const __m256i permutation = _mm256_loadu_si256((const __m256i *)expand_permutation[mask8]);
      const __m256 w = expand8_avx2(permutation, p, present, false);
      p += present;
      for (int i = 0; i < count; i++)
        acc[i][0] = _mm256_fmadd_ps(w, _mm256_maskload_ps(x0 + i * ldx + (size_t)c * 8, permutation), acc[i][0]);
    }
    for (int i = 0; i < count; i++) {
      for (int t = 1; t < turns; t++) acc[i][0] = _mm256_add_ps(acc[i][0], acc[i][t]);
      const __m128 half = _mm_add_ps(_mm256_castps256_ps128(acc[i][0]), _mm256_extractf128_ps(acc[i][0], 1));
      const __m128 quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
      y0[(size_t)i * s->rows + r] = _mm_cvtss_f32(_mm_add_ss(quarter, _mm_movehdup_ps(quarter)));
    }
  }
}

TARGET_AVX2 DEFINE_DIRECT(avx2)

TARGET_AVX2 static void sparse_unpack_avx2(const SparsePlan *s, blasint r0, blasint r1) {
  const size_t ld = (size_t)s->chunks * SPARSE_CHUNK;
  for (blasint r = r0; r < r1; r++) {
    const float *p = s->values + s->row_offsets[r];
    const uint8_t *masks = (const uint8_t *)(s->masks + (size_t)r * s->chunks);
    float *dst = s->panel + (size_t)(r - s->panel_first) * ld;
    const bool room = (size_t)s->row_offsets[r] + (size_t)s->chunks * SPARSE_CHUNK <= s->values_length;
    for (blasint c = 0; c < 2 * s->chunks; c++) {
      const int present = __builtin_popcount(masks[c]);
      _mm256_storeu_ps(dst + (size_t)c * 8, expand8_avx2(_mm256_loadu_si256((const __m256i *)expand_permutation[masks[c]]), p, present, room));
      p += present;
    }
  }
}

static int best_sparse_isa(void) {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq"))
    return SPARSE_ISA_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
    return SPARSE_ISA_AVX2;
  return SPARSE_ISA_SCALAR;
}
#else
static int best_sparse_isa(void) { return SPARSE_ISA_SCALAR; }
#endif

static atomic_int sparse_isa = -1; /* chosen on first use */

static int current_sparse_isa(void) {
  int isa = atomic_load(&sparse_isa);
  if (isa < 0) {
    isa = best_sparse_isa();
    atomic_store(&sparse_isa, isa);
  }
#ifdef SPARSE_X86
  if (isa == SPARSE_ISA_AVX2) pthread_once(&avx2_tables_once, init_avx2_tables);
#endif
  return isa;
}

typedef void (*SparseRowsKernel)(const SparsePlan *s, blasint r0, blasint r1);

static SparseRowsKernel sparse_kernel(bool unpack) {
  switch (current_sparse_isa()) {
#ifdef SPARSE_X86
  case SPARSE_ISA_AVX512:
    return unpack ? sparse_unpack_avx512 : sparse_direct_avx512;
  case SPARSE_ISA_AVX2:
    return unpack ? sparse_unpack_avx2 : sparse_direct_avx2;
#endif
  default:
    return unpack ? sparse_unpack_scalar : sparse_direct_scalar;
  }
}

/* ---- a pool of persistent threads ----
 * Part 0 of a task runs on the caller, parts 1..n−1 on workers. Workers spin for a short while
 * after each task, because decoding calls come back to back microseconds apart, then sleep. One
 * job uses the pool at a time; a concurrent one runs on its own thread alone. */
#define POOL_MAX_WORKERS 63
#define POOL_SPIN_NANOSECONDS 200000L

typedef void (*PoolTask)(void *argument, int part, int parts);

static struct {
  pthread_mutex_t busy; /* held by the job using the pool */
  pthread_mutex_t lock;
  pthread_cond_t wake;
  int workers;
  unsigned start_generation[POOL_MAX_WORKERS + 1]; /* the generation each worker was created in */
  atomic_uint generation;
  atomic_int pending;
  PoolTask task;
  void *argument;
  int parts;
} pool = {.busy = PTHREAD_MUTEX_INITIALIZER, .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static inline void cpu_relax(void) {
#ifdef SPARSE_X86
  __builtin_ia32_pause();
#endif
}

static long monotonic_nanoseconds(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec * 1000000000L + now.tv_nsec;
}

static void *pool_worker(void *argument) {
  const int part = (int)(intptr_t)argument;
  unsigned seen = pool.start_generation[part];
  for (;;) {
    const long give_up = monotonic_nanoseconds() + POOL_SPIN_NANOSECONDS;
    for (int spins = 0; atomic_load_explicit(&pool.generation, memory_order_acquire) == seen; spins++) {
      cpu_relax();
      if (spins % 64 == 0 && monotonic_nanoseconds() > give_up) {
        pthread_mutex_lock(&pool.lock);
        while (atomic_load(&pool.generation) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
        pthread_mutex_unlock(&pool.lock);
      }
    }
    seen = atomic_load(&pool.generation);
    if (part < pool.parts) pool.task(pool.argument, part, pool.parts);
    atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_release);
  }
  return NULL;
}

/* Runs task(argument, part, parts) for part = 0..parts−1 (fewer parts if threads are missing). */
static void pool_run(PoolTask task, void *argument, int parts) {
  if (parts > POOL_MAX_WORKERS + 1) parts = POOL_MAX_WORKERS + 1;
  if (parts <= 1 || pthread_mutex_trylock(&pool.busy) != 0) {
    task(argument, 0, 1);
    return;
  }
  while (pool.workers < parts - 1) {
    pthread_t thread;
    pool.start_generation[pool.workers + 1] = atomic_load(&pool.generation);
    if (pthread_create(&thread, NULL, pool_worker, (void *)(intptr_t)(pool.workers + 1)) != 0) break;
    pthread_detach(thread);
    pool.workers++;
  }
  if (parts > pool.workers + 1) parts = pool.workers + 1;
  pool.task = task;
  pool.argument = argument;
  pool.parts = parts;
  atomic_store(&pool.pending, pool.workers);
  pthread_mutex_lock(&pool.lock);
  atomic_fetch_add_explicit(&pool.generation, 1, memory_order_release);
  pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.lock);
  task(argument, 0, parts);
  while (atomic_load_explicit(&pool.pending, memory_order_acquire) > 0) cpu_relax();
  pthread_mutex_unlock(&pool.busy);
}

/* The first row of part `part` of `parts` over rows [first, last), splitting the values evenly. */
static blasint sparse_split(const SparsePlan *s, blasint first, blasint last, int part, int parts) {
  if (part == 0) return first;
  if (part == parts) return last;
  const double begin = s->row_offsets[first], end = s->row_offsets[last];
  /* every row costs its masks as well as its values */
  const double target = begin + (end - begin + (double)(last - first) * s->chunks) * part / parts;
  blasint lo = first, hi = last;
  while (lo < hi) {
    const blasint mid = lo + (hi - lo) / 2;
    if (s->row_offsets[mid] + (double)(mid - first) * s->chunks < target) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

typedef struct {
  const SparsePlan *plan;
  SparseRowsKernel kernel;
  blasint first, last;
} SparseTask;

static void sparse_task(void *argument, int part, int parts) {
  const SparseTask *t = argument;
  t->kernel(t->plan, sparse_split(t->plan, t->first, t->last, part, parts),
            sparse_split(t->plan, t->first, t->last, part + 1, parts));
}

static int job_threads(void) {
  const int threads = openblas_get_num_threads();
  return threads < 1 ? 1 : threads;
}

static double sparse_flops(const Job *job) { return 2.0 * job->args[0] * (double)job->lengths[3]; }

/* Arrays x, y, masks, values, row_offsets; numbers m, rows, cols, fixed. */
static void run_sparse_matmul(Job *job) {
  SparsePlan s = {
      .x = job->data[0], .y = job->data[1], .masks = job->data[2], .values = job->data[3], .row_offsets = job->data[4],
      .values_length = job->lengths[3],
      .m = ARG_INT(job, 0), .rows = ARG_INT(job, 1), .cols = ARG_INT(job, 2), .fixed = ARG_INT(job, 3),
  };
  s.chunks = (s.cols + SPARSE_CHUNK - 1) / SPARSE_CHUNK;
  /* below this much work a second thread costs more than it saves */
  const int threads = sparse_flops(job) < 2.0e5 ? 1 : job_threads();
  if (s.m <= SPARSE_DIRECT_MAX_ROWS) {
    SparseTask task = {&s, sparse_kernel(false), 0, s.rows};
    pool_run(sparse_task, &task, threads);
    return;
  }
  const size_t ld = (size_t)s.chunks * SPARSE_CHUNK;
  const blasint block = ld * s.rows <= SPARSE_PANEL_FLOATS ? s.rows : (blasint)(SPARSE_PANEL_FLOATS / ld > 0 ? SPARSE_PANEL_FLOATS / ld : 1);
  /* One buffer per calling thread, kept: a fresh one would be page-faulted in at every call. */
  static _Thread_local float *panel;
  static _Thread_local size_t panel_floats;
  if (panel_floats < ld * (size_t)block) {
    free(panel);
    panel = malloc(sizeof(float) * ld * (size_t)block);
    panel_floats = panel ? ld * (size_t)block : 0;
    if (!panel) {
      job->out_of_memory = true;
      return;
    }
  }
  s.panel = panel;
  for (blasint first = 0; first < s.rows; first += block) {
    s.panel_first = first;
    s.panel_rows = first + block <= s.rows ? block : s.rows - first;
    SparseTask task = {&s, sparse_kernel(true), first, first + s.panel_rows};
    /* Unpacking is about 1/m of the sgemm's work: on the calling thread alone, so no pool worker
     * is left spinning beside OpenBLAS's threads during the sgemm (at 2 threads that halved it). */
    pool_run(sparse_task, &task, 1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.m, s.panel_rows, s.cols, 1.0f, s.x, s.cols, s.panel,
                (blasint)ld, 0.0f, s.y + first, s.rows);
  }
}

static void run_causal_conv1d(Job *job) {
  const float *bias = job->lengths[2] > 0 ? job->data[2] : NULL;
  causal_conv1d_kernel(job->data[0], job->data[1], bias, job->data[3], job->data[4], (size_t)job->args[0],
                       (size_t)job->args[1], (size_t)job->args[2], (size_t)job->args[3]);
}

static void run_selective_scan(Job *job) {
  selective_scan_kernel(job->data[0], job->data[1], job->data[2], job->data[3], job->data[4], job->data[5], job->data[6],
                        job->data[7], (size_t)job->args[0], (size_t)job->args[1], (size_t)job->args[2],
                        (size_t)job->args[3]);
}

/* ---------- Node-API plumbing ---------- */

#define NAPI_CALL(env, call)                                                                       \
  do {                                                                                             \
    if ((call) != napi_ok) {                                                                       \
      napi_throw_error((env), NULL, "topiary_native: Node-API call failed: " #call);               \
      return NULL;                                                                                 \
    }                                                                                              \
  } while (0)

static void free_job(napi_env env, Job *job) {
  for (size_t i = 0; i < job->array_count; i++) napi_delete_reference(env, job->refs[i]);
  if (job->work) napi_delete_async_work(env, job->work);
  free(job);
}

static void settle(napi_env env, Job *job) {
  napi_value value;
  if (job->out_of_memory) {
    napi_value message;
    napi_create_string_utf8(env, "topiary_native: out of memory", NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, NULL, message, &value);
    napi_reject_deferred(env, job->deferred, value);
  } else {
    if (job->returns_bool) napi_get_boolean(env, job->ok, &value);
    else napi_get_undefined(env, &value);
    napi_resolve_deferred(env, job->deferred, value);
  }
  free_job(env, job);
}

static void execute_job(napi_env env, void *data) {
  (void)env;
  Job *job = data;
  job->run(job);
}

static void complete_job(napi_env env, napi_status status, void *data) {
  (void)status; /* cancellation is never requested */
  settle(env, data);
}

/*
 * The common entry: arguments are `array_count` typed arrays followed by numbers/booleans.
 * Returns the promise; runs inline when `flops` is below the threshold.
 */
static napi_value start_job(napi_env env, napi_callback_info info, size_t array_count, JobRun run, bool returns_bool,
                            double (*count_flops)(const Job *)) {
  size_t argc = MAX_ARRAYS + MAX_ARGS;
  napi_value argv[MAX_ARRAYS + MAX_ARGS];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Job *job = calloc(1, sizeof(Job));
  if (!job) {
    napi_throw_error(env, NULL, "topiary_native: out of memory");
    return NULL;
  }
  job->run = run;
  job->returns_bool = returns_bool;
  for (size_t i = 0; i < array_count; i++) {
    napi_typedarray_type type;
    napi_value buffer;
    size_t offset;
    if (napi_get_typedarray_info(env, argv[i], &type, &job->lengths[i], &job->data[i], &buffer, &offset) != napi_ok) {
      free_job(env, job);
      napi_throw_type_error(env, NULL, "topiary_native: expected a typed array");
      return NULL;
    }
    job->fp64 = type == napi_float64_array;
    napi_create_reference(env, argv[i], 1, &job->refs[i]);
    job->array_count = i + 1;
  }
  for (size_t i = array_count; i < argc && i - array_count < MAX_ARGS; i++) {
    napi_valuetype type;
    napi_typeof(env, argv[i], &type);
    if (type == napi_boolean) {
      bool flag;
      napi_get_value_bool(env, argv[i], &flag);
      job->args[i - array_count] = flag;
    } else {
      napi_get_value_double(env, argv[i], &job->args[i - array_count]);
    }
  }
  napi_value promise;
  NAPI_CALL(env, napi_create_promise(env, &job->deferred, &promise));
  if (count_flops(job) < SYNC_FLOP_THRESHOLD) {
    job->run(job);
    settle(env, job);
    return promise;
  }
  napi_value name;
  NAPI_CALL(env, napi_create_string_utf8(env, "topiary_native", NAPI_AUTO_LENGTH, &name));
  NAPI_CALL(env, napi_create_async_work(env, NULL, name, execute_job, complete_job, job, &job->work));
  NAPI_CALL(env, napi_queue_async_work(env, job->work));
  return promise;
}

static double gemm_flops(const Job *job) { return 2.0 * job->args[0] * job->args[1] * job->args[2]; }
static double syrk_flops(const Job *job) { return job->args[0] * job->args[1] * job->args[1]; }
static double cube_flops(const Job *job) { return job->args[0] * job->args[0] * job->args[0] / 3.0; }
static double solve_flops(const Job *job) { return job->args[0] * job->args[0] * job->args[1]; }
static double elementwise_flops(const Job *job) { return 10.0 * (double)job->lengths[0]; }

static napi_value gemm(napi_env env, napi_callback_info info) {
  return start_job(env, info, 3, run_gemm, false, gemm_flops);
}
static napi_value syrk(napi_env env, napi_callback_info info) {
  return start_job(env, info, 2, run_syrk, false, syrk_flops);
}
static napi_value cholesky(napi_env env, napi_callback_info info) {
  return start_job(env, info, 1, run_cholesky, true, cube_flops);
}
static napi_value invert_spd(napi_env env, napi_callback_info info) {
  return start_job(env, info, 1, run_invert_spd, true, cube_flops);
}
static napi_value symmetric_eigenvalues(napi_env env, napi_callback_info info) {
  return start_job(env, info, 2, run_symmetric_eigenvalues, true, cube_flops);
}
static napi_value triangular_solve(napi_env env, napi_callback_info info) {
  return start_job(env, info, 2, run_triangular_solve, false, solve_flops);
}
/* Per row: its removals (weights × block width) times the cost of one, about 2·size per factor. */
static double elimination_flops(const Job *job) { return 4.0 * job->args[0] * job->args[1] * job->args[1]; }
static napi_value eliminate_rows(napi_env env, napi_callback_info info) {
  return start_job(env, info, 4, run_eliminate_rows, true, elimination_flops);
}
/* Per round and position: every block's gain matrix, B² sums over the rows, for G / B blocks. */
static double refinement_flops(const Job *job) {
  const double groups = job->args[1] / job->args[3], block = fmin(job->args[4], groups);
  return 2.0 * job->args[5] * job->args[3] * groups * block * job->args[0];
}
static napi_value refine_nm_order(napi_env env, napi_callback_info info) {
  return start_job(env, info, 3, run_refine_nm_order, false, refinement_flops);
}
static napi_value causal_attention(napi_env env, napi_callback_info info) {
  return start_job(env, info, 4, run_causal_attention, false, attention_flops);
}
static napi_value token_log_probs(napi_env env, napi_callback_info info) {
  return start_job(env, info, 3, run_token_log_probs, false, elementwise_flops);
}
static napi_value rms_norm(napi_env env, napi_callback_info info) {
  return start_job(env, info, 3, run_rms_norm, false, elementwise_flops);
}
static napi_value layer_norm(napi_env env, napi_callback_info info) {
  return start_job(env, info, 4, run_layer_norm, false, elementwise_flops);
}
static napi_value activation(napi_env env, napi_callback_info info) {
  return start_job(env, info, 2, run_activation, false, elementwise_flops);
}
static napi_value gated_activation(napi_env env, napi_callback_info info) {
  return start_job(env, info, 3, run_gated_activation, false, elementwise_flops);
}
static napi_value add_bias(napi_env env, napi_callback_info info) {
  return start_job(env, info, 2, run_add_bias, false, elementwise_flops);
}
static napi_value add_in_place(napi_env env, napi_callback_info info) {
  return start_job(env, info, 2, run_add, false, elementwise_flops);
}
static napi_value soft_cap(napi_env env, napi_callback_info info) {
  return start_job(env, info, 1, run_soft_cap, false, elementwise_flops);
}
static napi_value rope(napi_env env, napi_callback_info info) {
  return start_job(env, info, 3, run_rope, false, elementwise_flops);
}

static napi_value sparse_matmul(napi_env env, napi_callback_info info) {
  return start_job(env, info, 5, run_sparse_matmul, false, sparse_flops);
}

/* sparseIsa(name): '' reports the kernel in use, 'auto' picks the best the CPU has, 'avx512' /
 * 'avx2' / 'scalar' force one if the CPU has it. Returns the one in use afterwards. */
static napi_value sparse_isa_call(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char request[16] = "";
  size_t length = 0;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc >= 1) NAPI_CALL(env, napi_get_value_string_utf8(env, argv[0], request, sizeof request, &length));
  int isa = current_sparse_isa();
  const int best = best_sparse_isa();
  if (strcmp(request, "auto") == 0) isa = best;
  for (int i = 0; i <= SPARSE_ISA_AVX512; i++)
    if (strcmp(request, SPARSE_ISA_NAMES[i]) == 0 && i <= best) isa = i;
  atomic_store(&sparse_isa, isa);
  isa = current_sparse_isa(); /* builds the tables the new choice needs */
  napi_value result;
  NAPI_CALL(env, napi_create_string_utf8(env, SPARSE_ISA_NAMES[isa], NAPI_AUTO_LENGTH, &result));
  return result;
}

static double conv1d_flops(const Job *job) { return 2.0 * (double)job->lengths[1] * job->args[0] * job->args[1]; }
static double scan_flops(const Job *job) { return 6.0 * (double)job->lengths[2] * job->args[0] * job->args[1]; }

static napi_value causal_conv1d(napi_env env, napi_callback_info info) {
  return start_job(env, info, 5, run_causal_conv1d, false, conv1d_flops);
}
static napi_value selective_scan(napi_env env, napi_callback_info info) {
  return start_job(env, info, 8, run_selective_scan, false, scan_flops);
}

static napi_value set_threads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t threads = 1;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  NAPI_CALL(env, napi_get_value_int32(env, argv[0], &threads));
  openblas_set_num_threads(threads);
  return NULL;
}

static napi_value get_threads(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  NAPI_CALL(env, napi_create_int32(env, openblas_get_num_threads(), &result));
  return result;
}

static napi_value library_info(napi_env env, napi_callback_info info) {
  (void)info;
  char text[512];
  snprintf(text, sizeof text, "%s (core %s)", openblas_get_config(), openblas_get_corename());
  napi_value result;
  NAPI_CALL(env, napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &result));
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  const napi_property_descriptor functions[] = {
      {"gemm", NULL, gemm, NULL, NULL, NULL, napi_default, NULL},
      {"syrk", NULL, syrk, NULL, NULL, NULL, napi_default, NULL},
      {"cholesky", NULL, cholesky, NULL, NULL, NULL, napi_default, NULL},
      {"invertSpd", NULL, invert_spd, NULL, NULL, NULL, napi_default, NULL},
      {"symmetricEigenvalues", NULL, symmetric_eigenvalues, NULL, NULL, NULL, napi_default, NULL},
      {"triangularSolve", NULL, triangular_solve, NULL, NULL, NULL, napi_default, NULL},
      {"eliminateRows", NULL, eliminate_rows, NULL, NULL, NULL, napi_default, NULL},
      {"refineNmOrder", NULL, refine_nm_order, NULL, NULL, NULL, napi_default, NULL},
      {"causalAttention", NULL, causal_attention, NULL, NULL, NULL, napi_default, NULL},
      {"rmsNorm", NULL, rms_norm, NULL, NULL, NULL, napi_default, NULL},
      {"layerNorm", NULL, layer_norm, NULL, NULL, NULL, napi_default, NULL},
      {"activation", NULL, activation, NULL, NULL, NULL, napi_default, NULL},
      {"gatedActivation", NULL, gated_activation, NULL, NULL, NULL, napi_default, NULL},
      {"addBias", NULL, add_bias, NULL, NULL, NULL, napi_default, NULL},
      {"addInPlace", NULL, add_in_place, NULL, NULL, NULL, napi_default, NULL},
      {"softCap", NULL, soft_cap, NULL, NULL, NULL, napi_default, NULL},
      {"rope", NULL, rope, NULL, NULL, NULL, napi_default, NULL},
      {"causalConv1d", NULL, causal_conv1d, NULL, NULL, NULL, napi_default, NULL},
      {"selectiveScan", NULL, selective_scan, NULL, NULL, NULL, napi_default, NULL},
      {"tokenLogProbs", NULL, token_log_probs, NULL, NULL, NULL, napi_default, NULL},
      {"sparseMatmul", NULL, sparse_matmul, NULL, NULL, NULL, napi_default, NULL},
      {"sparseIsa", NULL, sparse_isa_call, NULL, NULL, NULL, napi_default, NULL},
      {"setThreads", NULL, set_threads, NULL, NULL, NULL, napi_default, NULL},
      {"getThreads", NULL, get_threads, NULL, NULL, NULL, napi_default, NULL},
      {"info", NULL, library_info, NULL, NULL, NULL, napi_default, NULL},
  };
  NAPI_CALL(env, napi_define_properties(env, exports, sizeof functions / sizeof functions[0], functions));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
