/* C helpers of reduce.pyx (cdef extern from "reduce.h"). Included into Cython's generated C,
   which defines Py_ssize_t before it. */
#ifndef KFRTRL_REDUCE_H
#define KFRTRL_REDUCE_H

#include "clones.h"
/* The long passes of the Gram route over the A side (float64) and the fused step's row dots, as plain C with
   GCC/Clang vector extensions (4 doubles; setup.py's flags already assume GCC or
   Clang), compiled for several x86-64 instruction sets and one picked at load time
   (KFRTRL_CLONES, clones.h; the build targets baseline x86-64).
   No packing, unlike BLAS: faster on these short-and-wide shapes (docs/performance.md). */
#include <string.h>
typedef double kfrtrl_v4 __attribute__((vector_size(32)));
#define KFRTRL_LD(v, p) memcpy(&(v), (p), sizeof(kfrtrl_v4))
#define KFRTRL_ST(p, v) memcpy((p), &(v), sizeof(kfrtrl_v4))
#define KFRTRL_HSUM(v) (((v)[0] + (v)[1]) + ((v)[2] + (v)[3]))
#define KFRTRL_ROW(X, i, k, L) ((X) + (Py_ssize_t) ((i) < (k) ? (i) : (k) - 1) * (L))

/* G[i ldg + j] = <X_i, X_j> for i, j < k, X (k, L) row-major (kfrtrl_gram): 4 x 4 tiles of row
   pairs when k is a multiple of 4 and the clone has 32 vector registers (8 row loads per 16
   products; with 16 registers the tile spills), else 3 x 3 (6 per 9, fewer tiles wasted on
   repeated edge rows): the loads from cache, not the products, set the pace. Edge tiles repeat
   the last row. */
#define KFRTRL_GRAM_ROWS(W) \
    const double *x[W], *y[W]; \
    double tot[W][W]; \
    for (a = 0; a < W; a++) { \
        x[a] = KFRTRL_ROW(X, ib + a, k, L); \
        y[a] = KFRTRL_ROW(X, jb + a, k, L); \
    }
#define KFRTRL_GRAM_STORE(W) \
    for (a = 0; a < W; a++) \
        for (c = 0; c < W; c++) { \
            int i = ib + a < k ? ib + a : k - 1, j = jb + c < k ? jb + c : k - 1; \
            for (t = end; t < L; t++) \
                tot[a][c] += x[a][t] * y[c][t]; \
            G[i * ldg + j] = tot[a][c]; \
            G[j * ldg + i] = tot[a][c]; \
        }

static KFRTRL_CLONES void kfrtrl_gram_tile3(const double *X, int k, Py_ssize_t L, double *G, int ldg,
                                             int ib, int jb) {
    Py_ssize_t t, end = L - L % 4;
    int a, c;
    kfrtrl_v4 a00 = {0}, a01 = {0}, a02 = {0}, a10 = {0}, a11 = {0}, a12 = {0},
              a20 = {0}, a21 = {0}, a22 = {0}, x0, x1, x2, y0, y1, y2;
    KFRTRL_GRAM_ROWS(3)
    for (t = 0; t < end; t += 4) {
        KFRTRL_LD(x0, x[0] + t); KFRTRL_LD(x1, x[1] + t); KFRTRL_LD(x2, x[2] + t);
        KFRTRL_LD(y0, y[0] + t); KFRTRL_LD(y1, y[1] + t); KFRTRL_LD(y2, y[2] + t);
        a00 += x0 * y0; a01 += x0 * y1; a02 += x0 * y2;
        a10 += x1 * y0; a11 += x1 * y1; a12 += x1 * y2;
        a20 += x2 * y0; a21 += x2 * y1; a22 += x2 * y2;
    }
    tot[0][0] = KFRTRL_HSUM(a00); tot[0][1] = KFRTRL_HSUM(a01); tot[0][2] = KFRTRL_HSUM(a02);
    tot[1][0] = KFRTRL_HSUM(a10); tot[1][1] = KFRTRL_HSUM(a11); tot[1][2] = KFRTRL_HSUM(a12);
    tot[2][0] = KFRTRL_HSUM(a20); tot[2][1] = KFRTRL_HSUM(a21); tot[2][2] = KFRTRL_HSUM(a22);
    KFRTRL_GRAM_STORE(3)
}

static KFRTRL_CLONES void kfrtrl_gram_tile4(const double *X, int k, Py_ssize_t L, double *G, int ldg,
                                             int ib, int jb) {
    Py_ssize_t t, end = L - L % 4;
    int a, c;
    kfrtrl_v4 a00 = {0}, a01 = {0}, a02 = {0}, a03 = {0}, a10 = {0}, a11 = {0}, a12 = {0}, a13 = {0},
              a20 = {0}, a21 = {0}, a22 = {0}, a23 = {0}, a30 = {0}, a31 = {0}, a32 = {0}, a33 = {0},
              x0, x1, x2, x3, y0, y1, y2, y3;
    KFRTRL_GRAM_ROWS(4)
    for (t = 0; t < end; t += 4) {
        KFRTRL_LD(x0, x[0] + t); KFRTRL_LD(x1, x[1] + t); KFRTRL_LD(x2, x[2] + t); KFRTRL_LD(x3, x[3] + t);
        KFRTRL_LD(y0, y[0] + t); KFRTRL_LD(y1, y[1] + t); KFRTRL_LD(y2, y[2] + t); KFRTRL_LD(y3, y[3] + t);
        a00 += x0 * y0; a01 += x0 * y1; a02 += x0 * y2; a03 += x0 * y3;
        a10 += x1 * y0; a11 += x1 * y1; a12 += x1 * y2; a13 += x1 * y3;
        a20 += x2 * y0; a21 += x2 * y1; a22 += x2 * y2; a23 += x2 * y3;
        a30 += x3 * y0; a31 += x3 * y1; a32 += x3 * y2; a33 += x3 * y3;
    }
    tot[0][0] = KFRTRL_HSUM(a00); tot[0][1] = KFRTRL_HSUM(a01); tot[0][2] = KFRTRL_HSUM(a02); tot[0][3] = KFRTRL_HSUM(a03);
    tot[1][0] = KFRTRL_HSUM(a10); tot[1][1] = KFRTRL_HSUM(a11); tot[1][2] = KFRTRL_HSUM(a12); tot[1][3] = KFRTRL_HSUM(a13);
    tot[2][0] = KFRTRL_HSUM(a20); tot[2][1] = KFRTRL_HSUM(a21); tot[2][2] = KFRTRL_HSUM(a22); tot[2][3] = KFRTRL_HSUM(a23);
    tot[3][0] = KFRTRL_HSUM(a30); tot[3][1] = KFRTRL_HSUM(a31); tot[3][2] = KFRTRL_HSUM(a32); tot[3][3] = KFRTRL_HSUM(a33);
    KFRTRL_GRAM_STORE(4)
}

static void kfrtrl_gram(const double *X, int k, Py_ssize_t L, double *G, int ldg) {
    int ib, jb, w = k % 4 == 0 && KFRTRL_WIDE_TILES ? 4 : 3;
    for (ib = 0; ib < k; ib += w)
        for (jb = 0; jb <= ib; jb += w) {
            if (w == 4)
                kfrtrl_gram_tile4(X, k, L, G, ldg, ib, jb);
            else
                kfrtrl_gram_tile3(X, k, L, G, ldg, ib, jb);
        }
}

/* kfrtrl_rows_dot(X, rows, L, c, out): out[i] = <X_i, c> for double X (rows, L) row-major and c
   (L,), loaded 4 at a time, two vector sums per row. */
static KFRTRL_CLONES void kfrtrl_rows_dot(const double *X, int rows, Py_ssize_t L, const double *c, double *out) {
    Py_ssize_t t, end = L - L % 8;
    int i;
    for (i = 0; i < rows; i++) {
        const double *x = X + (Py_ssize_t) i * L;
        kfrtrl_v4 s0 = {0}, s1 = {0}, x0, x1, c0, c1;
        double tot;
        for (t = 0; t < end; t += 8) {
            KFRTRL_LD(x0, x + t); KFRTRL_LD(x1, x + t + 4); KFRTRL_LD(c0, c + t); KFRTRL_LD(c1, c + t + 4);
            s0 += x0 * c0; s1 += x1 * c1;
        }
        s0 += s1;
        tot = KFRTRL_HSUM(s0);
        for (t = end; t < L; t++)
            tot += x[t] * c[t];
        out[i] = tot;
    }
}

/* kfrtrl_rows_dot_f(X, rows, L, c, out): out[i] = <X_i, c> for float X (rows, L) and c (L,),
   products summed in float (four vectors of 8 lanes, each lane ~L/32 products: the factors'
   own precision, as a float GEMV), the lanes and the tail in double. Widening every element
   first costs twice the time. */
typedef float kfrtrl_f8 __attribute__((vector_size(32)));
static KFRTRL_CLONES void kfrtrl_rows_dot_f(const float *X, int rows, Py_ssize_t L, const float *c, double *out) {
    Py_ssize_t t, end = L - L % 32;
    int i, j;
    for (i = 0; i < rows; i++) {
        const float *x = X + (Py_ssize_t) i * L;
        kfrtrl_f8 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0}, x0, x1, x2, x3, c0, c1, c2, c3;
        double tot = 0.0;
        for (t = 0; t < end; t += 32) {
            memcpy(&x0, x + t, 32); memcpy(&x1, x + t + 8, 32); memcpy(&x2, x + t + 16, 32); memcpy(&x3, x + t + 24, 32);
            memcpy(&c0, c + t, 32); memcpy(&c1, c + t + 8, 32); memcpy(&c2, c + t + 16, 32); memcpy(&c3, c + t + 24, 32);
            s0 += x0 * c0; s1 += x1 * c1; s2 += x2 * c2; s3 += x3 * c3;
        }
        s0 += s1; s2 += s3; s0 += s2;
        for (j = 0; j < 8; j++)
            tot += (double) s0[j];
        for (t = end; t < L; t++)
            tot += (double) x[t] * (double) c[t];
        out[i] = tot;
    }
}

/* O (rows, L) = C X: C (rows, inner) row-major with row stride ldc, X (inner, L) and O
   row-major, O not overlapping X. Tiles of 4 output rows x 8 columns in registers, edge
   tiles repeating the last row (the same values written twice). */
static KFRTRL_CLONES void kfrtrl_combine(const double *restrict C, int ldc, int rows, int inner,
                                         const double *restrict X, Py_ssize_t L,
                                         double *restrict O) {
    Py_ssize_t t, end = L - L % 8;
    int jb, i;
    for (jb = 0; jb < rows; jb += 4) {
        const double *c0 = KFRTRL_ROW(C, jb, rows, ldc), *c1 = KFRTRL_ROW(C, jb + 1, rows, ldc);
        const double *c2 = KFRTRL_ROW(C, jb + 2, rows, ldc), *c3 = KFRTRL_ROW(C, jb + 3, rows, ldc);
        double *o0 = KFRTRL_ROW(O, jb, rows, L), *o1 = KFRTRL_ROW(O, jb + 1, rows, L);
        double *o2 = KFRTRL_ROW(O, jb + 2, rows, L), *o3 = KFRTRL_ROW(O, jb + 3, rows, L);
        for (t = 0; t < end; t += 8) {
            kfrtrl_v4 p0 = {0}, p1 = {0}, p2 = {0}, p3 = {0}, q0 = {0}, q1 = {0}, q2 = {0}, q3 = {0}, x, y;
            for (i = 0; i < inner; i++) {
                KFRTRL_LD(x, X + i * L + t);
                KFRTRL_LD(y, X + i * L + t + 4);
                p0 += c0[i] * x; q0 += c0[i] * y;
                p1 += c1[i] * x; q1 += c1[i] * y;
                p2 += c2[i] * x; q2 += c2[i] * y;
                p3 += c3[i] * x; q3 += c3[i] * y;
            }
            KFRTRL_ST(o3 + t, p3); KFRTRL_ST(o3 + t + 4, q3);
            KFRTRL_ST(o2 + t, p2); KFRTRL_ST(o2 + t + 4, q2);
            KFRTRL_ST(o1 + t, p1); KFRTRL_ST(o1 + t + 4, q1);
            KFRTRL_ST(o0 + t, p0); KFRTRL_ST(o0 + t + 4, q0);
        }
        for (t = end; t < L; t++) {
            double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
            for (i = 0; i < inner; i++) {
                double xi = X[i * L + t];
                s0 += c0[i] * xi; s1 += c1[i] * xi; s2 += c2[i] * xi; s3 += c3[i] * xi;
            }
            o3[t] = s3; o2[t] = s2; o1[t] = s1; o0[t] = s0;
        }
    }
}

#endif
