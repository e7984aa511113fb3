/* One-pass reductions for the runtime optimizers' global statistics (see native.py).
 *
 *   rf_dot2_T(a, b, n, out):   out[0] = <a, b>,  out[1] = <b, b>
 *   rf_change_T(g, p, n, out): out[0] = <g, g>,  out[1] = |p - g|^2,  then p <- g
 *
 * Each array is read once and the sums are accumulated in double precision. One core streams
 * memory faster from several places at once than from one, so the arrays are walked as S
 * segments side by side, each with W independent partial sums (which also keeps the loop from
 * waiting on the latency of a single running sum). The *_many forms take a whole parameter list
 * in one call. The difference p - g is formed in the arrays'
 * own precision (as torch's sub would), then squared and summed in double.
 */
#include <stdint.h>

#define S 4
#define W 8

/* tail + the S × W partial sums */
static double rf_total(double tail, const double part[S][W])
{
    for (int s = 0; s < S; ++s)
        for (int j = 0; j < W; ++j)
            tail += part[s][j];
    return tail;
}

#define RF_DEFINE(T, SUFFIX)                                                                      \
    void rf_dot2_##SUFFIX(const T *restrict a, const T *restrict b, long n, double *restrict out)  \
    {                                                                                             \
        double ab[S][W] = {{0}}, bb[S][W] = {{0}}, sab = 0.0, sbb = 0.0;                          \
        const long seg = n / S / W * W;                                                           \
        for (long i = 0; i < seg; i += W)                                                         \
            for (int s = 0; s < S; ++s)                                                           \
                for (int j = 0; j < W; ++j) {                                                     \
                    const long k = s * seg + i + j;                                               \
                    const double y = (double)b[k];                                                \
                    ab[s][j] += (double)a[k] * y;                                                 \
                    bb[s][j] += y * y;                                                            \
                }                                                                                 \
        for (long k = S * seg; k < n; ++k) {                                                      \
            const double y = (double)b[k];                                                        \
            sab += (double)a[k] * y;                                                              \
            sbb += y * y;                                                                         \
        }                                                                                         \
        out[0] = rf_total(sab, ab);                                                               \
        out[1] = rf_total(sbb, bb);                                                               \
    }                                                                                             \
                                                                                                  \
    void rf_change_##SUFFIX(const T *restrict g, T *restrict p, long n, double *restrict out)     \
    {                                                                                             \
        double gg[S][W] = {{0}}, dd[S][W] = {{0}}, sgg = 0.0, sdd = 0.0;                          \
        const long seg = n / S / W * W;                                                           \
        for (long i = 0; i < seg; i += W)                                                         \
            for (int s = 0; s < S; ++s)                                                           \
                for (int j = 0; j < W; ++j) {                                                     \
                    const long k = s * seg + i + j;                                               \
                    const T x = g[k];                                                             \
                    const double d = (double)(T)(p[k] - x);                                       \
                    gg[s][j] += (double)x * (double)x;                                            \
                    dd[s][j] += d * d;                                                            \
                    p[k] = x;                                                                     \
                }                                                                                 \
        for (long k = S * seg; k < n; ++k) {                                                      \
            const T x = g[k];                                                                     \
            const double d = (double)(T)(p[k] - x);                                               \
            sgg += (double)x * (double)x;                                                         \
            sdd += d * d;                                                                         \
            p[k] = x;                                                                             \
        }                                                                                         \
        out[0] = rf_total(sgg, gg);                                                               \
        out[1] = rf_total(sdd, dd);                                                               \
    }

RF_DEFINE(float, f32)
RF_DEFINE(double, f64)

/* The same over `count` pairs in one call: args holds (address of the first array, address of the
 * second, length) per pair, out receives two sums per pair. */
#define RF_MANY(NAME)                                                                             \
    void NAME##_many(const long long *args, long count, double *out)                              \
    {                                                                                             \
        for (long c = 0; c < count; ++c)                                                          \
            NAME((void *)(intptr_t)args[3 * c], (void *)(intptr_t)args[3 * c + 1],               \
                 (long)args[3 * c + 2], out + 2 * c);                                             \
    }

RF_MANY(rf_dot2_f32)
RF_MANY(rf_dot2_f64)
RF_MANY(rf_change_f32)
RF_MANY(rf_change_f64)
