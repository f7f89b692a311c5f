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
#define MAX_ARRAYS 4

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

/* Softmax of row[0:count] in place. The simd pragmas (-fopenmp-simd, no OpenMP runtime) allow the
 * reductions to be reordered into vector lanes without -ffast-math. */
MULTIVERSION static void softmax_in_place(float *row, blasint count) {
  float max = row[0];
#pragma omp simd reduction(max : max)
  for (blasint j = 0; j < count; j++) max = row[j] > max ? row[j] : max;
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (blasint j = 0; j < count; j++) {
    row[j] = fast_expf(row[j] - max);
    sum += row[j];
  }
  const float inverse_sum = 1.0f / sum;
#pragma omp simd
  for (blasint j = 0; j < count; j++) row[j] *= inverse_sum;
}

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
 * Causal attention. Work is split into tasks of (window, head, block of ATTENTION_BLOCK query
 * rows): scores = scale·Q[r0:r1]·K[k0:past+r1]ᵀ (keys after the block's last row are never touched),
 * soft-capped if asked, causal softmax per row, out[r0:r1] = P·V[k0:past+r1], heads being strided
 * views into the packed rows. `past` keys precede the queries (a KV cache): query row i sits at
 * position p = past + i and sees keys max(0, p − window + 1)..p with a sliding window (k0 is the
 * block's first row's first key), 0..p without (window 0, k0 = 0).
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
  long pairs, tasks;
  float scale, soft_cap; /* soft_cap 0: none */
  atomic_long next;
} AttentionPlan;

/* The earliest key the query at `position` sees. */
static blasint first_visible_key(const AttentionPlan *plan, blasint position) {
  return plan->window > 0 && position >= plan->window ? position - plan->window + 1 : 0;
}

static void attention_task(const AttentionPlan *plan, long task, float *scores) {
  const blasint hd = plan->head_dim;
  const long pair = task % plan->pairs;
  const blasint q_block = plan->q_blocks - 1 - (blasint)(task / plan->pairs);
  const blasint window = (blasint)(pair / plan->num_heads), head = (blasint)(pair % plan->num_heads);
  const size_t window_row = (size_t)window * plan->seq_len;
  const size_t window_key_row = (size_t)window * (plan->past + plan->seq_len);
  const float *q = plan->q + window_row * plan->q_width + (size_t)head * hd;
  const float *k = plan->k + window_key_row * plan->kv_width + (size_t)(head / plan->heads_per_kv) * hd;
  const float *v = plan->v + window_key_row * plan->kv_width + (size_t)(head / plan->heads_per_kv) * hd;
  float *out = plan->out + window_row * plan->q_width + (size_t)head * hd;
  const blasint r0 = q_block * ATTENTION_BLOCK;
  const blasint rows = r0 + ATTENTION_BLOCK <= plan->seq_len ? ATTENTION_BLOCK : plan->seq_len - r0;
  const blasint first_key = first_visible_key(plan, plan->past + r0);
  const blasint keys = plan->past + r0 + rows - first_key; /* also the leading dimension of `scores` */
  k += (size_t)first_key * plan->kv_width;
  v += (size_t)first_key * plan->kv_width;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, keys, hd, plan->scale, q + (size_t)r0 * plan->q_width,
              plan->q_width, k, plan->kv_width, 0.0f, scores, keys);
  for (blasint i = 0; i < rows; i++) {
    float *row = scores + (size_t)i * keys;
    const blasint position = plan->past + r0 + i;
    const blasint skipped = first_visible_key(plan, position) - first_key, visible = position + 1 - first_key - skipped;
    memset(row, 0, sizeof(float) * (size_t)skipped);
    if (plan->soft_cap > 0) soft_cap_kernel(row + skipped, (size_t)visible, plan->soft_cap);
    softmax_in_place(row + skipped, visible);
    memset(row + skipped + visible, 0, sizeof(float) * (size_t)(keys - skipped - visible));
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, keys, 1.0f, scores, keys, v, plan->kv_width, 0.0f,
              out + (size_t)r0 * plan->q_width, plan->q_width);
}

static void *attention_worker(void *argument) {
  AttentionPlan *plan = argument;
  float *scores = malloc(sizeof(float) * ATTENTION_BLOCK * (size_t)(plan->past + plan->seq_len));
  if (!scores) return NULL;
  for (long task; (task = atomic_fetch_add(&plan->next, 1)) < plan->tasks;) attention_task(plan, task, scores);
  free(scores);
  return plan;
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
  plan.pairs = (long)windows * plan.num_heads;
  plan.tasks = plan.pairs * plan.q_blocks;
  atomic_init(&plan.next, 0);
  const int blas_threads = openblas_get_num_threads();
  int threads = blas_threads;
  if (threads < 1 || attention_flops(job) < SYNC_FLOP_THRESHOLD) threads = 1;
  if (threads > plan.tasks) threads = (int)plan.tasks;
  if (threads > 64) threads = 64;
  openblas_set_num_threads(1);
  pthread_t helpers[64];
  int started = 0;
  while (started < threads - 1 && pthread_create(&helpers[started], NULL, attention_worker, &plan) == 0) started++;
  bool ok = attention_worker(&plan) != NULL;
  for (int i = 0; i < started; i++) {
    void *result;
    pthread_join(helpers[i], &result);
    ok = ok && result != NULL;
  }
  openblas_set_num_threads(blas_threads);
  if (!ok) job->out_of_memory = true;
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

static size_t rows_of(const Job *job, size_t matrix, size_t vector) {
  return job->lengths[vector] == 0 ? 0 : job->lengths[matrix] / job->lengths[vector];
}

static void run_rms_norm(Job *job) {
  rms_norm_kernel(job->data[0], job->data[1], job->data[2], rows_of(job, 0, 1), job->lengths[1], (float)job->args[0],
                  (float)job->args[1]);
}

static void run_layer_norm(Job *job) {
  const float *bias = job->lengths[2] > 0 ? job->data[2] : NULL;
  layer_norm_kernel(job->data[0], job->data[1], bias, job->data[3], rows_of(job, 0, 1), job->lengths[1], (float)job->args[0]);
}

static void run_activation(Job *job) { activation_kernel(ARG_INT(job, 0), job->data[0], NULL, job->data[1], job->lengths[0]); }

static void run_gated_activation(Job *job) {
  activation_kernel(ARG_INT(job, 0), job->data[0], job->data[1], job->data[2], job->lengths[0]);
}

static void run_add_bias(Job *job) { add_bias_kernel(job->data[0], job->data[1], rows_of(job, 0, 1), job->lengths[1]); }

static void run_add(Job *job) { add_kernel(job->data[0], job->data[1], job->lengths[0]); }

static void run_soft_cap(Job *job) { soft_cap_kernel(job->data[0], job->lengths[0], (float)job->args[0]); }

static void run_rope(Job *job) {
  rope_kernel(job->data[0], job->data[1], job->data[2], (size_t)job->args[0], (size_t)job->args[1], (size_t)job->args[2],
              (size_t)job->args[3], (size_t)job->args[4], (size_t)job->args[5], job->args[6] != 0);
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
      {"causalAttention", NULL, causal_attention, NULL, NULL, NULL, napi_default, NULL},
      {"rmsNorm", NULL, rms_norm, NULL, NULL, NULL, napi_default, NULL},
      {"layerNorm", NULL, layer_norm, NULL, NULL, NULL, napi_default, NULL},
      {"activation", NULL, activation, NULL, NULL, NULL, napi_default, NULL},
      {"gatedActivation", NULL, gated_activation, NULL, NULL, NULL, napi_default, NULL},
      {"addBias", NULL, add_bias, NULL, NULL, NULL, napi_default, NULL},
      {"addInPlace", NULL, add_in_place, NULL, NULL, NULL, napi_default, NULL},
      {"softCap", NULL, soft_cap, NULL, NULL, NULL, napi_default, NULL},
      {"rope", NULL, rope, NULL, NULL, NULL, napi_default, NULL},
      {"tokenLogProbs", NULL, token_log_probs, NULL, NULL, NULL, napi_default, NULL},
      {"setThreads", NULL, set_threads, NULL, NULL, NULL, napi_default, NULL},
      {"getThreads", NULL, get_threads, NULL, NULL, NULL, napi_default, NULL},
      {"info", NULL, library_info, NULL, NULL, NULL, napi_default, NULL},
  };
  NAPI_CALL(env, napi_define_properties(env, exports, sizeof functions / sizeof functions[0], functions));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
