"""Checkpoints: atomic writes, no unpickling, clear refusals, configuration differences named."""
import collections
import os
import pathlib
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import kfrtrl
from kfrtrl import checkpoint, tasks, train
from kfrtrl.cells import Layer

REPO = pathlib.Path(__file__).resolve().parents[1]
KILLS = int(os.environ.get("KFRTRL_KILLS", "5"))


def _state():
    return {
        "f64": np.arange(6.0).reshape(2, 3), "f32": np.ones(3, np.float32), "i64": np.array([1, 2], np.int64),
        "flags": np.array([True, False]), "empty": np.zeros((0, 4)),
        "pair": ("Adam", {"t": 3}), "window": collections.deque([(1, np.zeros(2))], maxlen=4),
        "rec": slice(0, 3), "dtype": np.dtype(np.float32), "nan": float("nan"), "big": 2 ** 100,
        "layer": Layer("W", np.ones((1, 2)), np.zeros((1, 1, 1, 2)), np.ones((1, 1, 1, 2)), slice(0, 2)),
        "nested": [{"a": None, "b": [1.5, "x"]}],
    }


def test_round_trip_keeps_types_and_values(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, _state(), {"seed": 3, "lr": 1e-3})
    state, config = checkpoint.load(path)
    assert config == {"seed": 3, "lr": 1e-3}
    want = _state()
    for k in ("f64", "f32", "i64", "flags", "empty"):
        assert state[k].dtype == want[k].dtype and np.array_equal(state[k], want[k])
    assert state["pair"] == ("Adam", {"t": 3}) and isinstance(state["pair"], tuple)
    assert isinstance(state["window"], collections.deque) and state["window"].maxlen == 4
    assert state["window"][0][0] == 1 and isinstance(state["window"][0], tuple)
    assert state["rec"] == slice(0, 3) and state["dtype"] == np.float32 and np.isnan(state["nan"])
    assert state["big"] == 2 ** 100 and state["nested"] == [{"a": None, "b": [1.5, "x"]}]
    assert isinstance(state["layer"], Layer) and state["layer"].rec == slice(0, 2)
    assert np.array_equal(state["layer"].dz, want["layer"].dz)
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]        # no temporary file left


def test_unsupported_values_are_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match=r"state\.x: expected arrays.*got builtin_function"):
        checkpoint.save(tmp_path / "c", {"x": print}, {})
    with pytest.raises(TypeError, match=r"config\.a: expected arrays.*got ndarray"):
        checkpoint.save(tmp_path / "c", {}, {"a": np.zeros(2)})
    with pytest.raises(TypeError, match="object array"):
        checkpoint.save(tmp_path / "c", {"x": np.array([None])}, {})
    assert not list(tmp_path.iterdir())


def _good_bytes(tmp_path):
    path = tmp_path / "good"
    checkpoint.save(path, _state(), {"seed": 0})
    return path.read_bytes()


def _object_npz(path, good):
    np.savez(path, header=np.array([{"format": "kfrtrl-checkpoint"}], dtype=object))


@pytest.mark.parametrize("make, problem", [
    (lambda p, good: p.write_bytes(b""), "truncated or corrupt"),
    (lambda p, good: p.write_bytes(good[:len(good) // 2]), "truncated or corrupt"),
    (lambda p, good: p.write_bytes(good[:-1]), "truncated or corrupt"),
    (lambda p, good: p.write_bytes(good[:100] + bytes([good[100] ^ 0xFF]) + good[101:]), "corrupt|checksum"),
    (lambda p, good: p.write_text("just text\n"), "truncated or corrupt|not a kfrtrl checkpoint|pickle"),
    (lambda p, good: np.save(p, np.zeros(3)), "a single numpy array"),
    (lambda p, good: np.savez(p, x=np.zeros(3)), "no header"),
    (lambda p, good: p.write_bytes(pickle.dumps({"format": "kfrtrl-checkpoint-1"})), "pickled objects"),
    (_object_npz, "pickled objects"),
])
def test_bad_files_raise_value_error_naming_path_and_problem(tmp_path, make, problem):
    path = tmp_path / "bad.ckpt"
    make(path, _good_bytes(tmp_path))
    if not path.exists():                       # numpy added its suffix
        path = next(tmp_path.glob("bad.ckpt.*"))
    with pytest.raises(ValueError, match=problem) as info:
        checkpoint.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_changed_array_fails_the_checksum(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"w": np.zeros(1000)}, {})
    with np.load(path) as archive:
        members = {k: archive[k] for k in archive.files}
    members["a0"][7] = 1.0                      # well-formed file, tampered numbers
    np.savez(path, **members)
    with pytest.raises(ValueError, match="checksum mismatch"):
        checkpoint.load(path)


def test_header_of_another_format_or_version(tmp_path):
    good = tmp_path / "good"
    checkpoint.save(good, {}, {})
    with np.load(good) as archive:
        header = archive["header"].tobytes().decode()
    for old, new, match in [('"kfrtrl-checkpoint"', '"other-tool"', "not a kfrtrl checkpoint"),
                            ('"format_version": 2', '"format_version": 99', "format version 99")]:
        np.savez(tmp_path / "c.npz", header=np.frombuffer(header.replace(old, new).encode(), np.uint8))
        with pytest.raises(ValueError, match=match):
            checkpoint.load(tmp_path / "c.npz")


def test_a_dataclass_outside_kfrtrl_is_never_looked_up(tmp_path):
    good = tmp_path / "good"
    checkpoint.save(good, {"layer": _state()["layer"]}, {})
    with np.load(good) as archive:
        members = {k: archive[k] for k in archive.files}
    header = members.pop("header").tobytes().decode().replace("kfrtrl.cells._base:Layer", "os:system")
    header = header.replace("kfrtrl.cells:Layer", "os:system")
    np.savez(tmp_path / "c.npz", header=np.frombuffer(header.encode(), np.uint8), **members)
    with pytest.raises(ValueError, match="unknown record type 'os:system'"):
        checkpoint.load(tmp_path / "c.npz")


class _Evil:
    """Unpickling this runs a shell command that creates a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"format": "kfrtrl-checkpoint-1", "trainer": _Evil(marker)}))
    trainer = train.Trainer(kfrtrl.UORO(kfrtrl.Elman(2, 3, rng=0), backend="numpy"), 2)
    with pytest.raises(ValueError, match="evil.ckpt.*pickled objects, which are never loaded"):
        train.load_checkpoint(evil, trainer)
    evil_npz = tmp_path / "evil.npz"
    np.savez(evil_npz, header=np.array([_Evil(marker)], dtype=object))
    with pytest.raises(ValueError, match="pickled objects"):
        train.load_checkpoint(evil_npz, trainer)
    assert not marker.exists()


def _build(clip=1.0, seed=0):
    cell = kfrtrl.Elman(4, 5, rng=seed)
    trainer = train.Trainer(train.make_estimator("kf:2", cell, batch_size=2, rng=seed, backend="numpy"), 4,
                            lr=3e-3, clip=clip, rng=seed)
    return trainer, tasks.CopyTask(2, rng=seed)


def test_resuming_with_other_settings_names_each_difference(tmp_path):
    path = tmp_path / "c"
    trainer, task = _build()
    train.run(trainer, task, 3)
    train.save_checkpoint(path, trainer, task, config={"seed": 0, "task": "copy", "steps": 3})
    other, other_task = _build(clip=0.5)
    with pytest.raises(ValueError, match=r"differs from it in clip: 0\.5 here, 1\.0 in the checkpoint$"):
        train.load_checkpoint(path, other, other_task)
    with pytest.raises(ValueError, match=r"clip: 0\.5 here.*; seed: 1 here, 0 in the checkpoint; steps: None here"):
        train.load_checkpoint(path, other, other_task, config={"seed": 1, "task": "copy"})
    same, same_task = _build()
    assert train.load_checkpoint(path, same, same_task) == {"seed": 0, "task": "copy", "steps": 3}
    assert np.array_equal(same.cell.W, trainer.cell.W)


_SAVER = """
import sys
import numpy as np
from kfrtrl import checkpoint
path = sys.argv[1]
big = np.empty(100_000)
i = 0
while True:
    big.fill(i)
    checkpoint.save(path, {"i": i, "big": big, "tail": np.full(7, i)}, {"i": i})
    if i == 0:
        print("saved", flush=True)
    i += 1
"""


def kill_during_save(tmp_path, kills, seed=0):
    """Start a child that saves checkpoints in a loop, SIGKILL it at a random moment, load the file;
    ``kills`` times. Returns the checkpoint numbers found after each kill (each must load intact)."""
    gen = np.random.default_rng(seed)
    path = tmp_path / "loop.ckpt"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    found = []
    for _ in range(kills):
        child = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], env=env, stdout=subprocess.PIPE)
        try:
            assert child.stdout.readline() == b"saved\n"      # saving in a loop from now on
            time.sleep(gen.uniform(0.0, 0.5))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        state, config = checkpoint.load(path)
        i = state["i"]
        assert config == {"i": i} and np.all(state["big"] == i) and np.all(state["tail"] == i)
        assert state["big"].shape == (100_000,)
        found.append(i)
    return found


def test_a_kill_during_save_leaves_the_previous_or_the_new_checkpoint(tmp_path):
    """SIGKILL a process saving in a loop at random moments: the file always loads, intact."""
    found = kill_during_save(tmp_path, KILLS)
    print(f"\n[kill during save] {KILLS} kills; checkpoints found: {found}", end="")
    assert len(found) == KILLS


def test_an_ok_state_saved_without_deferred_factors_still_loads():
    """OK's fused step holds its factors deferred (A, C, dzp); a state saved as plain factors (A, u),
    as before that form, loads and continues with the same estimates up to round-off."""
    gen = np.random.default_rng(3)
    cell = kfrtrl.Elman(n_in=3, n_hidden=5, rng=0)
    est = kfrtrl.OK(cell, rank=2, batch_size=2, rng=1)
    for _ in range(4):
        est.step(gen.standard_normal((2, 3)))
    saved = est.state_dict()
    saved["influence"] = {"_A": {"W": est.factors("W")[0]}, "_u": saved["influence"]["_u"]}
    again = kfrtrl.OK(cell, rank=2, batch_size=2, rng=9)
    again.load_state_dict(saved)
    x, dl = gen.standard_normal((2, 3)), gen.standard_normal((2, 5))
    for e in (est, again):
        e.step(x)
    np.testing.assert_allclose(again.gradient(dl)["W"], est.gradient(dl)["W"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(again.influence("W"), est.influence("W"), rtol=1e-10, atol=1e-12)
