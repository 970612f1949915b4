"""Argument checks at the public boundary.

Every error names the argument, what was expected and what was received.
Kernels never validate: everything reaching them went through here.
"""
import numbers

import numpy as np


def as_generator(rng):
    """Turn ``rng`` (None, int or numpy.random.Generator) into a Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, numbers.Integral) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(
        f"rng: expected None, an int seed or a numpy.random.Generator, got {type(rng).__name__}"
    )


def check_int(name, value, minimum):
    """Return ``value`` as int, requiring an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def check_float(name, value, low, high, open_low=False, open_high=False):
    """Return ``value`` as float, requiring it in the interval from ``low`` to ``high``.

    Both ends belong to the interval unless ``open_low`` / ``open_high`` (NaN never does).
    """
    interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number in {interval}, got {value!r}")
    v = float(value)
    if not ((v > low if open_low else v >= low) and (v < high if open_high else v <= high)):
        raise ValueError(f"{name}: expected a real number in {interval}, got {value}")
    return v


def check_dtype(name, dtype):
    """Return ``dtype`` as np.dtype, requiring float32 or float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{name}: expected float32 or float64, got {dtype!r}")
    return dt


def check_choice(name, value, choices):
    """Require ``value`` to be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {sorted(choices)}, got {value!r}")
    return value


def check_array(name, value, shape, dtype):
    """Check an input array's type, shape, dtype and finiteness.

    ``shape`` is a tuple of expected sizes. Returns the array (no copy).
    """
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"{name}: expected a numpy array of shape {shape} and dtype {np.dtype(dtype)}, "
            f"got {type(value).__name__}"
        )
    if value.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {value.shape}")
    if value.dtype != dtype:
        raise TypeError(
            f"{name}: expected dtype {np.dtype(dtype)} (the cell's dtype), got {value.dtype}"
        )
    if not np.isfinite(value).all():
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        raise ValueError(f"{name}: expected finite values, got {bad} non-finite entries")
    return value


def check_mask(name, mask, batch_size):
    """Return a boolean mask of shape (batch_size,) (None means all samples)."""
    if mask is None:
        return np.ones(batch_size, dtype=bool)
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != (batch_size,):
        raise ValueError(
            f"{name}: expected a boolean array of shape ({batch_size},), "
            f"got dtype {mask.dtype} and shape {mask.shape}"
        )
    return mask
