/* C helpers of propagate.pyx (cdef extern from "propagate.h"). Included into Cython's generated C,
   which defines Py_ssize_t before it. */
#ifndef KFRTRL_PROPAGATE_H
#define KFRTRL_PROPAGATE_H

#include "clones.h"

/* x <- x s + t y in place; returns the new sum of squares in double (8 partial sums).
   KFRTRL_CLONES: clones.h. */
#define KFRTRL_SCALE_ADD_SQ(T, NAME)                                                  \
static KFRTRL_CLONES double NAME(T *x, const T *y, T s, T t, Py_ssize_t m) {         \
    double acc[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};                        \
    Py_ssize_t i, j, end = m - m % 8;                                                 \
    for (i = 0; i < end; i += 8)                                                      \
        for (j = 0; j < 8; j++) {                                                     \
            T o = x[i + j] * s + t * y[i + j];                                        \
            x[i + j] = o;                                                             \
            acc[j] += (double) o * o;                                                 \
        }                                                                             \
    for (i = end; i < m; i++) {                                                       \
        T o = x[i] * s + t * y[i];                                                    \
        x[i] = o;                                                                     \
        acc[0] += (double) o * o;                                                     \
    }                                                                                 \
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])); \
}
KFRTRL_SCALE_ADD_SQ(double, kfrtrl_scale_add_sq_d)
KFRTRL_SCALE_ADD_SQ(float, kfrtrl_scale_add_sq_f)

#endif
