"""Synthetic series with a known best predictor, for tests and demonstrations.

- :func:`lgss_model` and :func:`sample`: a linear-Gaussian state-space
  series ``s' = A s + w``, ``y = C s + v`` whose hidden state decays with a
  chosen memory; :func:`kalman_mse` is the exact mean squared error of the
  optimal one-step predictor (the steady-state Kalman filter),
  :func:`kalman_predict` runs the filter on data.
- :func:`lob`: a synthetic limit-order-book stream (Hawkes-driven market
  order flow against queue-reactive best quotes) whose mid-price move also
  answers the order-flow imbalance averaged over the last ~``memory`` steps.
- :func:`delay`: recall the input of ``lag`` − 1 steps ago, the plainest
  dependency longer than a truncation.

:func:`generate` draws any of them by name, as ``kfrtrl series --synthetic`` does.
"""
from dataclasses import dataclass

import numpy as np

from ._validation import as_generator, check_float, check_int


@dataclass
class StateSpace:
    """``s_{t+1} = A s_t + w_t``, ``y_t = C s_t + v_t``, w ~ N(0, Q), v ~ N(0, R); s_0 from the stationary law.

    Parameters
    ----------
    A, Q : (n, n) float64 arrays, the transition and the state noise covariance
    C : (n_out, n) float64 array, the observation
    R : (n_out, n_out) float64 array, the observation noise covariance
    """

    A: np.ndarray
    C: np.ndarray
    Q: np.ndarray
    R: np.ndarray


def lgss_model(n_state=4, memory=30.0, obs_noise=0.1, rng=None):
    """A stable state-space model with one observed output whose state forgets with time constant ``memory``.

    A is block diagonal: 2 × 2 damped rotations ``r R(ω)`` (random ω in
    [π/16, π/4]) and, for odd n_state, one real decay r; r = exp(−1/memory),
    so the influence of an input decays by e every ``memory`` steps.
    C (1, n_state) and Q = (1 − r²) I (unit stationary state variance per
    coordinate) ; R = obs_noise · (stationary output variance).

    Parameters
    ----------
    n_state : int >= 1
    memory : float >= 1, steps
    obs_noise : float >= 0, observation noise variance relative to the signal's
    rng : None, int or numpy.random.Generator

    Returns
    -------
    StateSpace
    """
    n_state = check_int("n_state", n_state, 1)
    memory = check_float("memory", memory, 1.0, np.inf)
    obs_noise = check_float("obs_noise", obs_noise, 0.0, np.inf)
    gen = as_generator(rng)
    r = float(np.exp(-1.0 / memory))
    A = np.zeros((n_state, n_state))
    for i in range(0, n_state - 1, 2):
        w = gen.uniform(np.pi / 16, np.pi / 4)
        A[i:i + 2, i:i + 2] = r * np.array([[np.cos(w), -np.sin(w)], [np.sin(w), np.cos(w)]])
    if n_state % 2:
        A[-1, -1] = r
    C = gen.standard_normal((1, n_state)) / np.sqrt(n_state)
    Q = (1.0 - r * r) * np.eye(n_state)
    signal = float((C @ C.T)[0, 0])          # the stationary state covariance is I (A is r times orthogonal)
    return StateSpace(A, C, Q, np.array([[obs_noise * signal]]))


def stationary_covariance(model):
    """P with P = A P Aᵀ + Q (the stationary state covariance). Cost O(n⁶) small-n solve.

    Parameters
    ----------
    model : StateSpace

    Returns
    -------
    (n, n) float64 array
    """
    from scipy.linalg import solve_discrete_lyapunov

    return solve_discrete_lyapunov(model.A, model.Q)


def sample(model, steps, batch=None, rng=None):
    """Outputs of ``model`` from its stationary law. Cost O(steps·n²).

    Parameters
    ----------
    model : StateSpace
    steps : int >= 2
    batch : int >= 1 or None, independent series
    rng : None, int or numpy.random.Generator

    Returns
    -------
    (steps, n_out) float64 array, or (batch, steps, n_out) with ``batch``
    """
    steps = check_int("steps", steps, 2)
    gen = as_generator(rng)
    B = 1 if batch is None else check_int("batch", batch, 1)
    n = model.A.shape[0]
    Lq = np.linalg.cholesky(model.Q + 1e-300 * np.eye(n))
    s = gen.standard_normal((B, n)) @ np.linalg.cholesky(stationary_covariance(model)).T
    ys = np.empty((B, steps, model.C.shape[0]))
    for t in range(steps):
        ys[:, t] = s @ model.C.T + gen.standard_normal((B, model.C.shape[0])) * np.sqrt(np.diag(model.R))
        s = s @ model.A.T + gen.standard_normal((B, n)) @ Lq.T
    return ys[0] if batch is None else ys


def riccati(model, tol=1e-14, max_iter=100000):
    """Steady-state predicted state covariance P (iterating the Kalman filter's Riccati recursion).

    P = A P Aᵀ + Q − A P Cᵀ (C P Cᵀ + R)⁻¹ C P Aᵀ, started from the stationary covariance.

    Parameters
    ----------
    model : StateSpace
    tol : float, stop when no entry of P changes by more than tol · max(1, max |P|)
    max_iter : int, iterations at most

    Returns
    -------
    (n, n) float64 array
    """
    A, C, Q, R = model.A, model.C, model.Q, model.R
    P = stationary_covariance(model)
    for _ in range(max_iter):
        S = C @ P @ C.T + R
        K = A @ P @ C.T @ np.linalg.inv(S)
        P_new = A @ P @ A.T + Q - K @ S @ K.T
        if np.max(np.abs(P_new - P)) <= tol * max(1.0, np.max(np.abs(P))):
            return P_new
        P = P_new
    return P


def kalman_mse(model):
    """The optimal one-step prediction MSE of y (mean over output columns).

    tr(C P Cᵀ + R) / n_out with P of :func:`riccati`.

    Parameters
    ----------
    model : StateSpace

    Returns
    -------
    float
    """
    P = riccati(model)
    return float(np.trace(model.C @ P @ model.C.T + model.R)) / model.C.shape[0]


def kalman_predict(model, ys):
    """One-step predictions E[y_{t+1} | y_≤t] of the exact (time-varying) Kalman filter; cost O(steps·n³).

    Parameters
    ----------
    model : StateSpace
    ys : (steps, n_out) float array, observations

    Returns
    -------
    (steps − 1, n_out) float64 array
    """
    A, C, Q, R = model.A, model.C, model.Q, model.R
    m, P = np.zeros(A.shape[0]), stationary_covariance(model)
    out = np.empty((len(ys) - 1, C.shape[0]))
    for t in range(len(ys)):
        S = C @ P @ C.T + R
        K = P @ C.T @ np.linalg.inv(S)
        m = m + K @ (ys[t] - C @ m)                  # filtered state
        P = P - K @ S @ K.T
        m, P = A @ m, A @ P @ A.T + Q                # predicted state for t + 1
        if t + 1 < len(ys):
            out[t] = C @ m
    return out


def kalman_errors(model, ys):
    """Squared one-step errors of :func:`kalman_predict`, mean over outputs.

    Parameters
    ----------
    model : StateSpace
    ys : (steps, n_out) float array, observations

    Returns
    -------
    (steps − 1,) float64 array
    """
    return np.mean((kalman_predict(model, ys) - ys[1:]) ** 2, axis=1)


def lob(steps, memory=25, impact=0.5, lag=0, rng=None):
    """A synthetic limit-order-book stream, (steps, 5) float64 with columns :data:`LOB_COLUMNS`.

    Per step: buy and sell market orders ~ Poisson(λ) with self-exciting
    (discrete Hawkes, exponential kernel) intensities; the best-ask and
    best-bid queues gain limit orders, lose cancellations and are eaten by
    the market orders; an empty queue moves its quote one tick away and
    refills (the spread widens, and closes again when the other side's
    limit orders improve it). On top, slow informed flow: with probability
    ``impact``·|tanh(p_t)| the mid-price moves one tick in the sign of p_t,
    the order-flow imbalance averaged over ~``memory`` steps, ``lag`` steps
    old (exponentially, p_t = (1 − 1/memory) p_{t−1} + OFI_{t−1−lag}/√memory;
    slow informed traders acting on the flow they saw ``lag`` steps before):
    a dependence on long-lagged features that a model can learn. With
    ``lag`` = 0 the newest flow already moves p, so a model whose gradient
    spans one or two steps is rewarded for keeping it; with ``lag`` beyond a
    truncation and a short ``memory`` the flow must be kept ``lag`` steps
    before it pays (the README's "Long time series" measures both).
    Columns: mid-price change (ticks), spread (ticks), queue imbalance
    (q_bid − q_ask)/(q_bid + q_ask), order-flow imbalance (buys − sells),
    market orders (buys + sells). Cost O(steps).

    Parameters
    ----------
    steps : int >= 2
    memory : float >= 1, steps the informed flow averages over
    impact : float in [0, 1], the informed flow's strength
    lag : int >= 0, steps between the order flow and the informed traders' reaction to it
    rng : None, int or numpy.random.Generator

    Returns
    -------
    (steps, 5) float64 array
    """
    steps = check_int("steps", steps, 2)
    memory = check_float("memory", memory, 1.0, np.inf)
    impact = check_float("impact", impact, 0.0, 1.0)
    lag = check_int("lag", lag, 0)
    gen = as_generator(rng)
    mu, alpha, decay = 0.4, 0.5, 0.7        # branching ratio alpha < 1: stationary, mean rate mu / (1 − alpha)
    excite = np.zeros(2)
    q = np.array([5.0, 5.0])                # bid, ask queue sizes
    bid, ask = 0.0, 1.0
    pressure = 0.0
    out = np.empty((steps, 5))
    for t in range(steps):
        lam = mu + alpha * excite
        buys, sells = gen.poisson(lam)
        excite = decay * excite + (1 - decay) * np.array([buys, sells])
        mid0 = 0.5 * (bid + ask)
        q += gen.poisson(2.0, size=2) - gen.binomial(q.astype(np.int64), 0.2)
        q -= np.array([sells, buys])
        if q[1] <= 0:
            ask, q[1] = ask + 1.0, 5.0
        if q[0] <= 0:
            bid, q[0] = bid - 1.0, 5.0
        if ask - bid > 1.0 and gen.random() < 0.5:       # a limit order improves the wider side
            if gen.random() < 0.5:
                bid, q[0] = bid + 1.0, 1.0
            else:
                ask, q[1] = ask - 1.0, 1.0
        if gen.random() < impact * abs(np.tanh(pressure)):
            shift = np.sign(pressure)
            bid, ask = bid + shift, ask + shift
        out[t] = (0.5 * (bid + ask) - mid0, ask - bid, (q[0] - q[1]) / (q[0] + q[1]), buys - sells, buys + sells)
        flow = out[t - lag, 3] if t >= lag else 0.0
        pressure = (1.0 - 1.0 / memory) * pressure + flow / np.sqrt(memory)
    return out


LOB_COLUMNS = ("mid_change", "spread", "imbalance", "ofi", "volume")


def delay(steps, lag=5, rng=None):
    """Columns (x_t, x_{t−lag}), (steps, 2): x iid N(0, 1), zeros before the start.

    With ``Series(data, targets=[1], inputs=[0], horizon=1)`` the target of step t is x_{t+1−lag},
    the input seen lag − 1 steps before the current one: a dependency over lag − 1 transitions,
    invisible to a gradient truncated to fewer (best constant MSE 1, the optimum 0).

    Parameters
    ----------
    steps : int >= 2
    lag : int >= 1
    rng : None, int or numpy.random.Generator

    Returns
    -------
    (steps, 2) float64 array
    """
    steps = check_int("steps", steps, 2)
    lag = check_int("lag", lag, 1)
    x = as_generator(rng).standard_normal(steps)
    return np.column_stack([x, np.concatenate([np.zeros(min(lag, steps)), x[:max(steps - lag, 0)]])])


def generate(name, streams, length, rng=None, state=3, memory=None, lag=None, obs_noise=1.0, impact=0.5):
    """A synthetic series by name, as the series task and ``kfrtrl series --synthetic`` use it.

    Parameters
    ----------
    name : {"lgss", "lob", "delay"}
    streams : int >= 1, independent series
    length : int >= 2, rows per series
    rng : None, int or numpy.random.Generator
    state, obs_noise : lgss's state dimension and observation noise (:func:`lgss_model`)
    memory : float or None, lgss's (default 100) or lob's (default 25) memory in steps
    lag : int or None, delay's lag (>= 1, default 5) or lob's (>= 0, default 0)
    impact : float in [0, 1], lob's informed flow strength

    Returns
    -------
    table : (streams, length, C) float64 array
    names : list of str or None, the column names (lob)
    target, inputs : str or None, the default target and input columns
    model : StateSpace or None, lgss's model
    description : str
    """
    gen = as_generator(rng)
    if name == "lgss":
        memory = memory or 100.0
        model = lgss_model(state, memory, obs_noise, rng=gen)
        return sample(model, length, batch=streams, rng=gen), None, "0", None, model, \
            f"lgss (state {state}, memory {memory:g}, obs-noise {obs_noise:g})"
    if name == "delay":
        lag = 5 if lag is None else lag
        table = np.stack([delay(length, lag=lag, rng=g) for g in gen.spawn(streams)])
        return table, None, "1", "0", None, f"delay (lag {lag})"
    if name != "lob":
        raise ValueError(f"name: expected one of ['lgss', 'lob', 'delay'], got {name!r}")
    memory, lag = memory or 25.0, lag or 0
    table = np.stack([lob(length, memory=memory, impact=impact, lag=lag, rng=g) for g in gen.spawn(streams)])
    return table, list(LOB_COLUMNS), "mid_change", None, None, \
        f"synthetic LOB (memory {memory:g}, impact {impact:g}, lag {lag})"
