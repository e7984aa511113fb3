/* One-pass reductions for the runtime optimizers' global statistics (see native.py).
 *
 * Each function streams its arrays once and accumulates in double precision, in W independent
 * lanes so that the loop is bound by memory, not by the latency of one running sum.
 *
 *   rf_dot2_T(a, b, n, out):   out[0] = <a, b>,  out[1] = <b, b>
 *   rf_change_T(g, p, n, out): out[0] = <g, g>,  out[1] = |p - g|^2,  then p <- g
 *
 * The difference p - g is formed in the arrays' own precision (as torch's sub would), then
 * squared and summed in double.
 */
#define W 16

#define RF_DEFINE(T, SUFFIX)                                                                      \
    void rf_dot2_##SUFFIX(const T *restrict a, const T *restrict b, long n, double *restrict out)  \
    {                                                                                             \
        double ab[W] = {0}, bb[W] = {0}, sab = 0.0, sbb = 0.0;                                    \
        long i = 0;                                                                               \
        for (; i + W <= n; i += W)                                                                \
            for (int j = 0; j < W; ++j) {                                                         \
                double y = (double)b[i + j];                                                      \
                ab[j] += (double)a[i + j] * y;                                                    \
                bb[j] += y * y;                                                                   \
            }                                                                                     \
        for (; i < n; ++i) {                                                                      \
            double y = (double)b[i];                                                              \
            sab += (double)a[i] * y;                                                              \
            sbb += y * y;                                                                         \
        }                                                                                         \
        for (int j = 0; j < W; ++j) {                                                             \
            sab += ab[j];                                                                         \
            sbb += bb[j];                                                                         \
        }                                                                                         \
        out[0] = sab;                                                                             \
        out[1] = sbb;                                                                             \
    }                                                                                             \
                                                                                                  \
    void rf_change_##SUFFIX(const T *restrict g, T *restrict p, long n, double *restrict out)     \
    {                                                                                             \
        double gg[W] = {0}, dd[W] = {0}, sgg = 0.0, sdd = 0.0;                                    \
        long i = 0;                                                                               \
        for (; i + W <= n; i += W)                                                                \
            for (int j = 0; j < W; ++j) {                                                         \
                T x = g[i + j];                                                                   \
                double d = (double)(T)(p[i + j] - x);                                             \
                gg[j] += (double)x * (double)x;                                                   \
                dd[j] += d * d;                                                                   \
                p[i + j] = x;                                                                     \
            }                                                                                     \
        for (; i < n; ++i) {                                                                      \
            T x = g[i];                                                                           \
            double d = (double)(T)(p[i] - x);                                                     \
            sgg += (double)x * (double)x;                                                         \
            sdd += d * d;                                                                         \
            p[i] = x;                                                                             \
        }                                                                                         \
        for (int j = 0; j < W; ++j) {                                                             \
            sgg += gg[j];                                                                         \
            sdd += dd[j];                                                                         \
        }                                                                                         \
        out[0] = sgg;                                                                             \
        out[1] = sdd;                                                                             \
    }

RF_DEFINE(float, f32)
RF_DEFINE(double, f64)
