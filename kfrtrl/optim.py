"""The optimizers of :class:`kfrtrl.train.Trainer`: SGD, Adam, NoBackTrack's Kalman-like filter; schedules.

:class:`SGD` and :class:`Adam` apply a gradient to the parameters in place;
:func:`clip_global_norm` bounds the joint norm of the gradients first.

:class:`Schedule` gives the learning rate of the t-th parameter update,
constant or ``α_t = α_0 / (1 + t/τ)^ρ`` with ρ in (1/2, 1], the regime of
the stochastic-approximation convergence analyses of online RTRL
(Σ α_t = ∞, Σ α_t² < ∞).

:class:`KalmanFilter` preconditions any estimator's gradient by a running
estimate of the Fisher matrix, the way NoBackTrack (Ollivier, Tallec &
Charpiat 2015) feeds its unbiased gradient estimate to a "lightweight
Kalman-like filter". The paper's own equations for that filter were not
available to check; this is the extended Kalman filter (EKF) on the
parameters in its information form, which is the online natural gradient
(Ollivier 2018, "Online natural gradient as a Kalman filter")::

    EKF, static θ, output ŷ_t, H_t = ∂ŷ_t/∂θ, output Fisher I_t (R⁻¹ for Gaussian noise):
        P_t⁻¹ = P_{t−1}⁻¹ + H_tᵀ I_t H_t,   θ_t = θ_{t−1} − P_t ∇ℓ_t
    = natural gradient with J_t = P_t⁻¹ / (t + 1), rates α_t = γ_t = 1/(t + 1), J_0 = P_0⁻¹;
      a fading memory (P inflated by 1/(1 − γ) each step) gives constant α = γ.

    here:  J_t = (1 − γ) J_{t−1} + γ H_tᵀ I_t H_t                Fisher estimate, memory ~ 1/γ steps
           θ_t = θ_{t−1} − α_t (Ĵ_t + λ I)⁻¹ g_t                  Ĵ_t = J_t / (1 − (1 − γ)^t)

where g_t is the (clipped, batch-mean) gradient estimate and H_t the
estimator's own Jacobian estimate: H_tᵀ I_t H_t = Σ_k f_k f_kᵀ with f_k the
estimator's gradient for ∂L/∂ŷ = column k of a square root of I_t (squared
error: I; softmax: diag(p) − p pᵀ), one gradient call per output dimension
(:meth:`KalmanFilter.fisher_factors`). With NoBackTrack's rank-one influence
``G ≈ v ⊗ w`` each f_k is the factor w itself times the scalar
``(∂ŷ/∂h · v)ᵀ L[:, k]``: the rank-one factors are used directly, with no
sampled output. Choices where the EKF leaves room (documented
hyper-parameters): α_t is the trainer's schedule, separate from γ (α = γ is
the fading-memory EKF; the best measured setting has α ≫ γ); the prior is a
constant damping λ (a Tikhonov term that bounds a step by α |g| / λ) with
the bias correction Ĵ instead of a fading J_0; J is kept diagonal (cost O(p C)
per step for p parameters and C outputs) or as its best rank-k approximation
(top-k eigenpairs of ``(1 − γ) J_{t−1} + γ Σ_k f_k f_kᵀ``, cost O(p (k + C)²),
solved by Woodbury's identity; outside those k directions the step is α g / λ,
so rank k needs a larger λ). The full EKF (O(p²) memory) is not offered.
"""
import copy

import numpy as np

from ._validation import as_generator, check_float, check_int


class Schedule:
    """Learning rate of the t-th update (t = 0, 1, ...): ``lr / (1 + t/tau)^rho``, or ``lr`` if tau is None.

    Parameters
    ----------
    lr : float >= 0, α_0
    tau : float > 0 or None (constant rate)
    rho : float in (1/2, 1], the decay exponent
    """

    def __init__(self, lr, tau=None, rho=1.0):
        self.lr = check_float("lr", lr, 0.0, np.inf)
        self.tau = None if tau is None else check_float("tau", tau, 0.0, np.inf)
        if self.tau == 0.0 or self.tau == np.inf:
            raise ValueError(f"tau: expected a finite real number > 0 or None, got {tau}")
        self.rho = check_float("rho", rho, 0.5, 1.0)
        if self.rho == 0.5:
            raise ValueError("rho: expected a real number in (0.5, 1], got 0.5")

    def __call__(self, t):
        """The learning rate of update t (int >= 0)."""
        if self.tau is None:
            return self.lr
        return self.lr / (1.0 + t / self.tau) ** self.rho

    def config(self):
        """{"lr", "tau", "rho"}: what a checkpoint stores and compares."""
        return {"lr": self.lr, "tau": self.tau, "rho": self.rho}

    def __repr__(self):
        if self.tau is None:
            return f"Schedule(lr={self.lr:g})"
        return f"Schedule(lr={self.lr:g}, tau={self.tau:g}, rho={self.rho:g})"


def as_schedule(lr):
    """A :class:`Schedule` from a float (constant) or a Schedule (returned as is).

    Parameters
    ----------
    lr : float >= 0 or Schedule

    Returns
    -------
    Schedule
    """
    return lr if isinstance(lr, Schedule) else Schedule(lr)


def _flat(arrays):
    """Concatenate the float64 ravel of a dict's arrays (sorted keys)."""
    return np.concatenate([np.ravel(arrays[k]).astype(np.float64) for k in sorted(arrays)])


class KalmanFilter:
    """NoBackTrack's Kalman-like filter: natural-gradient steps with a running Fisher estimate.

    Parameters
    ----------
    gamma : float in (0, 1], γ, weight of the newest Fisher sample (memory ~ 1/γ updates)
    damping : float > 0, λ added to the diagonal of Ĵ
    rank : int >= 0, 0 for a diagonal J, else the rank k of J's low-rank approximation
    rng : None, int or Generator, for the random signs of :meth:`fisher_factors` when batch > 1

    Use: once per step ``observe([f_1, ..., f_C])`` with f_k the gradient dict for
    ∂L/∂ŷ = ``fisher_factors(loss, ŷ)[k]``, and ``update(params, grads, lr)`` at each
    parameter update (see the module docstring). Cost per observe/update: O(p C)
    diagonal, O(p (k + C)²) rank k, plus C gradient calls of the estimator.
    """

    needs_fisher = True

    def __init__(self, gamma=0.01, damping=1e-3, rank=0, rng=None):
        self.gamma = check_float("gamma", gamma, 0.0, 1.0)
        if self.gamma == 0.0:
            raise ValueError("gamma: expected a real number in (0, 1], got 0.0")
        self.damping = check_float("damping", damping, 0.0, np.inf)
        if self.damping == 0.0:
            raise ValueError("damping: expected a real number > 0, got 0.0")
        self.rank = check_int("rank", rank, 0)
        self.rng = as_generator(rng)
        self.t = 0                       # Fisher samples seen
        self.diag = None                 # (p,) diagonal J  (rank 0)
        self.U = None                    # (p, k) orthonormal eigenvectors of J  (rank k)
        self.s = None                    # (k,) eigenvalues of J

    def fisher_factors(self, loss, out):
        """Columns of a square root of the output's Fisher matrix: a list of C arrays (B, C) float64.

        For each output dimension k, row b of the k-th array is column k of L_b (L_b L_bᵀ = the
        Fisher matrix of sample b's output: I for the squared error, diag(p) − p pᵀ for the
        softmax, whose root is L[:, k] = √p_k (e_k − p)), times s_b / √B with s_b = 1 for B = 1
        and random signs ±1 for B > 1. The estimator's gradient for ∂L/∂out = array k is then
        f_k = Σ_b s_b H_bᵀ L_b[:, k] / √B, and Σ_k f_k f_kᵀ is the batch-mean Fisher
        (1/B) Σ_b H_bᵀ L_b L_bᵀ H_b: exactly for B = 1, up to zero-mean cross-sample terms for B > 1.

        Parameters
        ----------
        loss : {"mse", "xent"}
        out : (B, C) float array, the readout's output (logits for "xent")

        Returns
        -------
        list of C (B, C) float64 arrays
        """
        B, C = out.shape
        s = np.ones((B, 1)) if B == 1 else self.rng.choice((-1.0, 1.0), size=(B, 1))
        s = s / np.sqrt(B)
        eye = np.eye(C)
        if loss == "mse":
            return [s * eye[k] for k in range(C)]
        z = out - out.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return [s * np.sqrt(p[:, k:k + 1]) * (eye[k] - p) for k in range(C)]

    def observe(self, fisher_grads):
        """Fold J ← (1 − γ) J + γ Σ_k f_k f_kᵀ into the Fisher estimate.

        Parameters
        ----------
        fisher_grads : list of dict of str to float array
            The gradients f_k, each in the parameters' layout.
        """
        F = np.stack([_flat(f) for f in fisher_grads])          # (C, p)
        self.t += 1
        g = self.gamma
        if self.rank == 0:
            if self.diag is None:
                self.diag = np.zeros(F.shape[1])
            self.diag *= 1.0 - g
            self.diag += g * np.einsum("cp,cp->p", F, F)
            return
        if self.U is None:
            self.U, self.s = np.zeros((F.shape[1], 0)), np.zeros(0)
        # eigenpairs of (1-γ) U diag(s) Uᵀ + γ Fᵀ F through a QR of [U, Fᵀ]: O(p (k + C)²)
        Q, R = np.linalg.qr(np.column_stack([self.U, F.T]))
        core = R @ np.diag(np.append((1.0 - g) * self.s, np.full(len(F), g))) @ R.T
        w, V = np.linalg.eigh(core)
        keep = np.argsort(w)[::-1][: self.rank]
        self.s = np.maximum(w[keep], 0.0)
        self.U = Q @ V[:, keep]

    def precondition(self, grads):
        """(Ĵ + λ I)⁻¹ g.

        Parameters
        ----------
        grads : dict of str to float array

        Returns
        -------
        dict of str to float64 array, the same layout
        """
        g = _flat(grads)
        scale = 1.0 / (1.0 - (1.0 - self.gamma) ** self.t) if self.t else 0.0
        if self.rank == 0:
            d = np.zeros_like(g) if self.diag is None else scale * self.diag
            step = g / (d + self.damping)
        else:
            # Woodbury with U orthonormal: (U S Uᵀ + λI)⁻¹ g = g/λ − U (S / (λ (S + λ))) Uᵀ g
            lam = self.damping
            s = np.zeros(0) if self.s is None else scale * self.s
            step = g / lam
            if len(s):
                step -= self.U @ ((s / (lam * (s + lam))) * (self.U.T @ g))
        out, i = {}, 0
        for k in sorted(grads):
            size = np.size(grads[k])
            out[k] = step[i:i + size].reshape(np.shape(grads[k]))
            i += size
        return out

    def update(self, params, grads, lr):
        """θ -= lr (Ĵ + λ I)⁻¹ g, in place on the arrays of ``params``.

        Parameters
        ----------
        params : dict of str to float array, updated in place
        grads : dict of str to float array, same keys and shapes
        lr : float, this update's rate
        """
        for k, step in self.precondition(grads).items():
            params[k] -= (lr * step).astype(params[k].dtype)

    def config(self):
        """``{"gamma", "damping", "rank"}``: the hyper-parameters."""
        return {"gamma": self.gamma, "damping": self.damping, "rank": self.rank}

    def state_dict(self):
        """Hyper-parameters, Fisher estimate and RNG state (a resumed run continues bit for bit)."""
        empty = np.zeros(0)
        return {"config": self.config(), "t": self.t, "diag": empty if self.diag is None else self.diag.copy(),
                "U": empty if self.U is None else self.U.copy(), "s": empty if self.s is None else self.s.copy(),
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s values.

        Parameters
        ----------
        state : dict, as returned by :meth:`state_dict`
        """
        self.gamma, self.damping, self.rank = (state["config"][k] for k in ("gamma", "damping", "rank"))
        self.t = int(state["t"])
        self.diag = np.array(state["diag"]) if self.rank == 0 and self.t else None
        self.U = np.array(state["U"]) if self.rank and self.t else None
        self.s = np.array(state["s"]) if self.rank and self.t else None
        self.rng.bit_generator.state = state["rng"]


class SGD:
    """Plain gradient descent ``θ -= lr · g``; cost O(parameters) per update.

    Parameters
    ----------
    lr : float > 0
        Learning rate when :meth:`update` is given none.
    """

    def __init__(self, lr=0.1):
        self.lr = check_float("lr", lr, 0.0, np.inf, open_low=True, open_high=True)

    def update(self, params, grads, lr=None):
        """Update the arrays of ``params`` in place.

        Parameters
        ----------
        params : dict of str to float array
            Updated in place, each in its own dtype.
        grads : dict of str to float array
            Same keys and shapes as ``params``.
        lr : float or None
            This update's rate (None: ``self.lr``).
        """
        lr = self.lr if lr is None else lr
        for k, p in params.items():
            p -= (lr * grads[k]).astype(p.dtype)

    def state_dict(self):
        """SGD has no state: an empty dict."""
        return {}

    def load_state_dict(self, state):
        """Nothing to restore.

        Parameters
        ----------
        state : dict
            As returned by :meth:`state_dict`.
        """


class Adam:
    """Adam with bias correction; moments in the parameters' dtype.

    Parameters
    ----------
    lr : float > 0
        Learning rate when :meth:`update` is given none.
    beta1, beta2 : float in [0, 1)
        Decay rates of the first and second moments.
    eps : float >= 0
        Added to the root of the second moment.

    Notes
    -----
    Cost O(parameters) per update; memory two arrays per parameter.

    References
    ----------
    D. P. Kingma and J. Ba, "Adam: A method for stochastic optimization", ICLR 2015.
    """

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr = check_float("lr", lr, 0.0, np.inf, open_low=True, open_high=True)
        self.beta1 = check_float("beta1", beta1, 0.0, 1.0, open_high=True)     # 1: the bias correction
        self.beta2 = check_float("beta2", beta2, 0.0, 1.0, open_high=True)     # divides by zero
        self.eps = check_float("eps", eps, 0.0, np.inf, open_high=True)
        self.t = 0
        self.m, self.v = {}, {}
        self._scratch = {}              # one array per parameter, written before it is read

    def update(self, params, grads, lr=None):
        """Update the arrays of ``params`` in place (one Adam step).

        In place, in the parameters' dtypes, through one scratch array per parameter: no
        temporary is allocated (a fresh array of over 128 kB is a fresh mapping, page faults and
        all: the (128, 138) float64 weight of the copy task took ~220 µs an update with
        temporaries, ~65 µs without).

        Parameters
        ----------
        params : dict of str to float array
            Updated in place, each in its own dtype.
        grads : dict of str to float array
            Same keys and shapes as ``params``.
        lr : float or None
            This update's rate (None: ``self.lr``).
        """
        lr = self.lr if lr is None else lr
        self.t += 1
        c1 = 1.0 - self.beta1 ** self.t
        c2 = 1.0 - self.beta2 ** self.t
        for k, p in params.items():
            g = grads[k]
            if k not in self.m:
                self.m[k], self.v[k] = np.zeros_like(p), np.zeros_like(p)
            if k not in self._scratch:                      # also after load_state_dict
                self._scratch[k] = np.empty_like(p)
            m, v, s = self.m[k], self.v[k], self._scratch[k]
            np.subtract(g, m, out=s, casting="unsafe")      # m += (1 - β1)(g - m)
            s *= 1.0 - self.beta1
            m += s
            np.multiply(g, g, out=s, casting="unsafe")      # v += (1 - β2)(g² - v)
            s -= v
            s *= 1.0 - self.beta2
            v += s
            np.sqrt(v, out=s)                               # θ -= lr m̂ / (√v̂ + ε)
            s *= 1.0 / np.sqrt(c2)
            s += self.eps
            np.divide(m, s, out=s)
            s *= lr / c1
            p -= s

    def state_dict(self):
        """The step count and the moments: ``{"t": int, "m": {name: array}, "v": {name: array}}``."""
        return {"t": self.t, "m": copy.deepcopy(self.m), "v": copy.deepcopy(self.v)}

    def load_state_dict(self, state):
        """Restore the step count and the moments.

        Parameters
        ----------
        state : dict
            As returned by :meth:`state_dict`.
        """
        self.t = int(state["t"])
        self.m = copy.deepcopy(state["m"])
        self.v = copy.deepcopy(state["v"])


def clip_global_norm(grads, max_norm):
    """Scale all of ``grads`` together, in place, so that their joint norm is at most ``max_norm``.

    Parameters
    ----------
    grads : dict of str to float array
    max_norm : float > 0 or None
        None: only measure.

    Returns
    -------
    float
        The joint Euclidean norm before clipping.
    """
    norm = float(np.sqrt(sum(float(np.sum(g * g)) for g in grads.values())))
    if max_norm is not None and norm > max_norm:
        for g in grads.values():
            g *= max_norm / norm
    return norm
