"""Every compiled backend against the numpy reference: whole estimators, parallel paths, "auto".

Parametrised over ``kfrtrl.available_backends()`` minus "numpy", so a backend
is covered as soon as it registers. Same seed -> same random signs, so the
estimates must agree to round-off: float64 <= 1e-10 relative, float32 <= 1e-4.
"""
import numpy as np
import pytest

import kfrtrl
from kfrtrl import backends
from kfrtrl._thresholds import PARALLEL_MIN_WORK
from kfrtrl.threads import limit
from kfrtrl.estimators.ok import max_rank
import kfrtrl._reference as ref
from kfrtrl.estimators import make_estimator, parse_spec
from _helpers import COMPILED, every_spec, kernel_module, random_signs, rel_max

TOL = {np.float64: 1e-10, np.float32: 1e-4}
N_IN = 2

# every registered estimator (parameter 4), plus the other chain counts and ranks
SPECS = every_spec(4) + ["kf:1", "kf:3", "ok:1", "ok:2", "ok:3"]


# ---- whole estimators ----


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("n", [1, 3, 7])
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("backend", COMPILED)
def test_estimator_matches_numpy(backend, spec, n, batch, dtype, sequence):
    """Same h and gradients as backend="numpy" over 9 steps with a full and a masked reset."""
    cell = kfrtrl.Elman(N_IN, n, alpha=0.8, dtype=dtype, rng=3)
    name, k = parse_spec(spec)
    if name == "ok" and k > max_rank(cell):     # n = 1: rank 1 at most
        with pytest.raises(ValueError, match=r"rank: expected an integer in \[1, 1\]"):
            make_estimator(spec, cell, batch_size=batch, backend=backend)
        return
    xs, dl_dhs = sequence(9, batch, N_IN, n, seed=4, dtype=dtype)
    ests = [make_estimator(spec, cell, batch_size=batch, rng=5, backend=b, n_threads=2) for b in ("numpy", backend)]
    assert ests[1].backend == backend
    for t, (x, dl) in enumerate(zip(xs, dl_dhs)):
        if t == 3:
            for est in ests:
                est.reset()
        if t == 6:
            for est in ests:
                est.reset(np.arange(batch) % 2 == 0)
        h_ref, h = (est.step(x) for est in ests)
        np.testing.assert_array_equal(h, h_ref)
        g_ref, g = (est.gradient(dl) for est in ests)
        assert g.keys() == g_ref.keys()
        for name in g_ref:
            assert g[name].dtype == dtype
            assert rel_max(g[name], g_ref[name]) <= TOL[dtype], (t, name)


# ---- kernels ----

# ---- parallel paths ----


def _past_threshold(work):
    """{kernel: (inputs, outputs)} with inputs just past ``work`` elements (below it every kernel runs
    serially); outputs are filled by the call (in-place kernels: the inputs they update)."""
    gen = np.random.default_rng(11)
    normal = gen.standard_normal
    B, n, nf = 4, 16, 128
    V, W = normal((B, work // (B * 2 * n) + 1, 2 * n)), normal((4 * n, n + 3))
    Vf, Wf = normal((B, nf, nf)), normal((nf, nf + 3))                 # the folded Elman route: B nf² >= work
    V1, V1f = normal((1, 2 * (work // (4 * n)) + 1, 2 * n)), normal((1, 2 * (work // (2 * nf)) + 1, nf))
    Gs, Gs1 = normal((B, 2 * n, work // (B * 2 * n) + 1)), normal((1, 2 * n + 1, work // (2 * n + 1) + 1))
    m = work // (B * n * n) + 1
    G, Dt, a = normal((B, n, m, n)), normal((B, n, n)), normal((B, m))
    HA, u = normal((B, m, n, n)), normal((B, m, m))
    c = random_signs(gen, (B, m), np.float64)
    w = G.reshape(B, -1, n)
    Vk, Uk = normal((B, 4, 64 * 64)), normal((B, 4, 67))
    Wd, lam, dz, ad = normal((nf, nf + 3)), gen.uniform(0, 1, (B, nf)), normal((B, nf)), normal((B, nf + 3))
    A2, u2 = normal((B, 2, nf, nf)), normal((B, 2, nf + 3))
    A2[0], u2[0] = 0.0, 0.0                                             # a reset sample
    A2[-1, 1] = A2[-1, 0]                                               # equal factors: the Householder route
    mu = -(-work // (B * 8))                                            # UORO: rows of a wide w (8, mu)
    Wu, au, wu = normal((8, mu)), normal((B, mu)), normal((B, 8, mu))
    wu[0] = 0.0
    return {
        "jvp_blocks": ((V, V[:, :, :n], W[:, :n].T, normal((B, 2, 2, n)), normal((B, 2, 4, n))), (np.empty_like(V),)),
        "jvp_blocks (folded)": ((Vf, Vf, Wf[:, :nf].T, normal((B, 1, 1, nf)), normal((B, 1, 1, nf))),
                                (np.empty_like(Vf),)),
        "jvp_dense": ((V, normal((B, 2 * n, 2 * n))), (np.empty_like(V),)),
        "jvp_state": ((normal((B, 2 * n, 2 * n)), Gs), (np.empty_like(Gs),)),
        "jvp_state (batch 1)": ((normal((1, 2 * n + 1, 2 * n + 1)), Gs1), (np.empty_like(Gs1),)),
        # one sample, fewer than the threads: its rows split in blocks (an odd count: unequal blocks)
        "jvp_dense (batch 1)": ((V1, normal((1, 2 * n, 2 * n))), (np.empty_like(V1),)),
        "jvp_blocks (folded, batch 1)": ((V1f, V1f, Wf[:, :nf].T, normal((1, 1, 1, nf)), normal((1, 1, 1, nf))),
                                         (np.empty_like(V1f),)),
        "kf_combine": ((HA, u, Dt, a, c, -c), (np.empty_like(HA), np.empty_like(u))),
        "rank1_update": ((w, normal(B), normal((B, w.shape[1])), normal((B, n)), normal(B)), (np.empty_like(w),)),
        "ok_reduce": ((Vk, Uk, random_signs(gen, (B, 4), np.float64)),
                      (np.empty((B, 3, Vk.shape[2])), np.empty((B, 3, Uk.shape[2])))),
        "kf_fused": ((A2[:, :1], u2[:, :1], Wd, lam, dz, ad, c[:, :1], -c[:, :1]),
                     (np.empty_like(A2[:, :1]), np.empty_like(u2[:, :1]))),
        "ok_fused": ((A2, np.tile(np.eye(2, 3), (B, 1, 1)), np.zeros((B, 1, dz.shape[1])), u2, Wd, lam, dz, ad,
                      random_signs(gen, (B, 3), np.float64), normal((B, nf))),
                     (np.empty_like(u2), np.empty(A2.shape[:3]))),
        "uoro_fused": ((normal((B, 8)), wu, np.einsum("bpm,bpm->b", wu, wu), Wu, gen.uniform(0, 1, (B, 8)),
                        normal((B, 8)), au, random_signs(gen, (B, 8), np.float64)), ()),
    }


UPDATED_IN_PLACE = {"uoro_fused": (0, 1, 2), "ok_fused": (0, 1, 2)}


@pytest.mark.parametrize("kernel", list(_past_threshold(PARALLEL_MIN_WORK)))
@pytest.mark.parametrize("backend", COMPILED)
def test_parallel_path_is_exact_and_matches_one_thread(backend, kernel):
    """Past PARALLEL_MIN_WORK the kernels split rows or samples over threads (one BLAS thread
    each): the same bits on 1 and 2 threads, and the reference's result. Called as an
    estimator's step calls them, under ``limit(n, blas=1)`` (with a compiled backend BLAS is
    held at one thread whatever the count, so the one-thread call does not thread its GEMMs)."""
    inputs, outputs = _past_threshold(PARALLEL_MIN_WORK)[kernel]
    name = kernel.split()[0]
    assert max(x.size for x in inputs) >= PARALLEL_MIN_WORK
    results = []
    for ops, n_threads in ((ref, 1), (kernel_module(backend), 1), (kernel_module(backend), 2)):
        copies = {id(x): x.copy() for x in inputs}          # one copy per array: V passed as Vr stays V
        ins, outs = [copies[id(x)] for x in inputs], [np.full_like(x, np.nan) for x in outputs]
        with limit(n_threads, blas=1):
            getattr(ops, name)(*ins, *outs, n_threads)
        results.append(outs + [ins[i] for i in UPDATED_IN_PLACE.get(name, ())])
    if name == "ok_fused":          # its state (A, C, dzp): the same factors, however a backend splits them
        results = [res[:2] + [ref.reduce.ok_factors(*res[2:])] + res[2:] for res in results]
    for i, (want, one, two) in enumerate(zip(*results)):
        np.testing.assert_array_equal(one, two)
        assert name == "ok_fused" and i > 2 or rel_max(two, want) <= TOL[np.float64]


@pytest.mark.parametrize("cores", [1, 3, 8])
@pytest.mark.parametrize("kernel", [k for k in _past_threshold(PARALLEL_MIN_WORK) if "batch 1" in k])
@pytest.mark.parametrize("backend", COMPILED)
def test_row_blocks_follow_the_machine_not_the_thread_count(monkeypatch, backend, kernel, cores):
    """One sample's GEMM cut in blocks for the machine's cores (:func:`kfrtrl._thresholds.row_blocks`):
    any core count gives the reference's result, with the same bits on 1 and 2 threads."""
    monkeypatch.setattr("kfrtrl._thresholds.CORES", cores)
    test_parallel_path_is_exact_and_matches_one_thread(backend, kernel)


@pytest.mark.parametrize("block_rows", [1, 5, 64])
@pytest.mark.parametrize("layer", [(2, 2, 4), (3, 1, 2), (1, 3, 1)])       # LSTM, GRU's two layers
@pytest.mark.parametrize("backend", COMPILED)
def test_jvp_blocks_in_blocks_of_any_size(monkeypatch, backend, layer, block_rows):
    """The general route cuts the B K tangents in blocks of GEMM_BLOCK_ROWS (the last one short):
    the reference's result for every block size, the same bits on 1 and 2 threads."""
    monkeypatch.setattr("kfrtrl._thresholds.GEMM_BLOCK_ROWS", block_rows)
    monkeypatch.setattr("kfrtrl._thresholds.PARALLEL_MIN_WORK", 0)
    S, S_in, Z = layer
    gen = np.random.default_rng(block_rows)
    B, K, n = 3, 7, 5
    n_rec = n if S_in == 1 else 2 * n
    V = gen.standard_normal((B, K, S_in * n))
    W = gen.standard_normal((Z * n, n_rec + 3))
    lam, dz = gen.standard_normal((B, S, S_in, n)), gen.standard_normal((B, S, Z, n))
    Vr = V[:, :, n:n + n_rec] if S_in > 1 and n_rec == n else V[:, :, :n_rec]
    want = np.empty((B, K, S * n))
    ref.jvp_blocks(V, Vr, W[:, :n_rec].T, lam, dz, want, 1)
    outs = []
    for n_threads in (1, 2):
        out = np.full_like(want, np.nan)
        with limit(n_threads, blas=1):
            kernel_module(backend).jvp_blocks(V, Vr, W[:, :n_rec].T, lam, dz, out, n_threads)
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert rel_max(outs[0], want) <= TOL[np.float64]


# ---- numba: the prange variants ----

needs_numba = pytest.mark.skipif("numba" not in COMPILED, reason="numba backend unavailable")

@needs_numba
@pytest.mark.parametrize("spec", ["rtrl", "kf:3", "ok:3", "uoro"])
def test_numba_parallel_loops_match(monkeypatch, spec, sequence):
    """With the parallel threshold at 0 the prange variants run, and match the reference."""
    monkeypatch.setattr("kfrtrl._thresholds.PARALLEL_MIN_WORK", 0)
    cell = kfrtrl.Elman(N_IN, 5, rng=16)
    xs, dl_dhs = sequence(5, 4, N_IN, 5, seed=17)
    ests = [make_estimator(spec, cell, batch_size=4, rng=18, backend=b, n_threads=2)
            for b in ("numpy", "numba")]
    for x, dl in zip(xs, dl_dhs):
        for est in ests:
            est.step(x)
        g_ref, g = (est.gradient(dl) for est in ests)
        assert rel_max(g["W"], g_ref["W"]) <= 1e-10


# ---- "auto" ----


@pytest.mark.parametrize("spec", SPECS)
def test_auto_resolves_to_an_available_backend(spec, sequence):
    cell = kfrtrl.Elman(N_IN, 4, rng=19)
    est = make_estimator(spec, cell, batch_size=2, rng=20, backend="auto")
    ref_est = make_estimator(spec, cell, batch_size=2, rng=20, backend="numpy")
    assert est.backend in kfrtrl.available_backends()
    xs, dl_dhs = sequence(3, 2, N_IN, 4, seed=21)
    for x, dl in zip(xs, dl_dhs):
        est.step(x)
        ref_est.step(x)
    assert rel_max(est.gradient(dl)["W"], ref_est.gradient(dl)["W"]) <= 1e-10


def test_a_backend_missing_a_kernel_is_unavailable(monkeypatch):
    """A module lacking any kernel of the reference is not offered (nor used by "auto")."""
    monkeypatch.setitem(backends._MODULES, "partial", "kfrtrl._reference")
    monkeypatch.delattr(ref, "jvp_blocks")
    assert "partial" not in kfrtrl.available_backends()
    with pytest.raises(ImportError, match=r"lacks the kernels \[.*'jvp_blocks'"):
        kfrtrl.UORO(kfrtrl.Elman(N_IN, 3, rng=23), backend="partial")


def test_auto_falls_back_to_numpy_with_a_warning(monkeypatch):
    monkeypatch.setitem(backends._MODULES, "fast", "kfrtrl._no_such_module")
    monkeypatch.setattr(kfrtrl.OK, "auto_backends", ("fast",))
    cell = kfrtrl.Elman(N_IN, 3, rng=22)
    with pytest.warns(UserWarning, match="backend 'fast' unavailable"):
        est = kfrtrl.OK(cell, rank=2, backend="auto")
    assert est.backend == "numpy"
    with pytest.raises(ImportError, match="backend: 'fast' is not available"):
        kfrtrl.OK(cell, rank=2, backend="fast")
    assert "fast" not in kfrtrl.available_backends()


def test_auto_takes_the_next_compiled_backend_with_a_warning(monkeypatch):
    monkeypatch.setitem(backends._MODULES, "fast", "kfrtrl._no_such_module")
    monkeypatch.setattr(kfrtrl.OK, "auto_backends", ("fast", "numpy"))
    with pytest.warns(UserWarning, match="backend 'fast' unavailable .*; using 'numpy'"):
        est = kfrtrl.OK(kfrtrl.Elman(N_IN, 3, rng=22), rank=2, backend="auto")
    assert est.backend == "numpy"
    for name in COMPILED:
        monkeypatch.setattr(kfrtrl.OK, "auto_backends", ("fast", name))
        with pytest.warns(UserWarning, match=f"using {name!r}"):
            assert kfrtrl.OK(kfrtrl.Elman(N_IN, 3, rng=22), rank=2, backend="auto").backend == name



@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell_name", ["elman", "rhn"])
@pytest.mark.parametrize("backend", ["numpy"] + COMPILED)
def test_a_step_given_the_loss_gradient_brings_the_gradient_products(monkeypatch, backend, cell_name, dtype):
    """OK's fused step given ``loss_grad`` takes F c from the terms in cache: ``gradient`` with that
    dl_dh equals the plain one's and makes no pass over the factors; another dl_dh, or one after a
    reset, takes the pass."""
    def make():
        cell = (kfrtrl.Elman(n_in=3, n_hidden=6, rng=0, dtype=dtype) if cell_name == "elman"
                else kfrtrl.cells.RHN(n_in=3, n_hidden=6, depth=1, rng=0, dtype=dtype))
        return kfrtrl.OK(cell, rank=3, batch_size=4, rng=1, backend=backend, n_threads=2)

    gen = np.random.default_rng(5)
    xs, dls = gen.standard_normal((8, 4, 3)).astype(dtype), gen.standard_normal((8, 4, 6)).astype(dtype)
    plain, fused = make(), make()
    pass_over_factors = kfrtrl.estimators._kron.KroneckerSum._factor_products
    tol = {np.float64: 1e-10, np.float32: 1e-4}[dtype]
    for t, (x, dl) in enumerate(zip(xs, dls)):
        plain.step(x)
        fused.step(x, loss_grad=lambda h, dl=dl: dl)
        if t == 5:
            for est in (plain, fused):
                est.reset(np.array([True, False, True, False]))
            assert rel_max(fused.gradient(dl)["W"], plain.gradient(dl)["W"]) <= tol
            continue
        want = plain.gradient(dl)["W"]
        with monkeypatch.context() as m:
            m.setattr(kfrtrl.estimators._kron.KroneckerSum, "_factor_products",
                      lambda *a: pytest.fail("a pass over the factors"))
            assert rel_max(fused.gradient(dl)["W"], want) <= tol
        other = 2 * dl
        assert kfrtrl.estimators._kron.KroneckerSum._factor_products is pass_over_factors
        assert rel_max(fused.gradient(other)["W"], plain.gradient(other)["W"]) <= tol


def test_loss_grad_of_the_wrong_shape_is_refused():
    est = kfrtrl.OK(kfrtrl.Elman(n_in=3, n_hidden=6, rng=0), rank=2, batch_size=4, rng=1)
    with pytest.raises(ValueError, match=r"loss_grad\(h\).*\(4, 6\)"):
        est.step(np.ones((4, 3)), loss_grad=lambda h: np.ones((4, 5)))
