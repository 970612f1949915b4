"""The task generators produce the specified sequences; the curriculum follows its rule."""
import math

import numpy as np
import pytest

import kfrtrl
from kfrtrl import datasets, tasks, train

def test_copy_sequence_layout():
    inputs, targets = tasks.copy_sequence([1, 0, 1])
    M, B = tasks.MARKER, tasks.BLANK
    assert inputs.tolist() == [M, 1, 0, 1, B, B, B, B]
    assert targets.tolist() == [B, B, B, B, M, 1, 0, 1]


def _play(task, steps):
    """Record inputs, targets and resets of every stream."""
    xs, ys, resets = [], [], []
    for _ in range(steps):
        x, y, r = task.next()
        assert x.shape == (task.batch_size, 4) and np.all(x.sum(axis=1) == 1.0)
        xs.append(x.argmax(axis=1))
        ys.append(y)
        resets.append(r)
    return np.array(xs), np.array(ys), np.array(resets)


@pytest.mark.parametrize("T_start", [1, 3, 9])
def test_copy_task_streams_are_copy_sequences(T_start):
    task = tasks.CopyTask(batch_size=3, curriculum=tasks.Curriculum(T_start=T_start), rng=0)
    xs, ys, resets = _play(task, 200)
    lengths = []
    for b in range(3):
        starts = np.flatnonzero(resets[:, b])
        assert starts[0] == 0
        for s, e in zip(starts[:-1], starts[1:]):
            T = (e - s - 2) // 2
            bits = xs[s + 1:s + 1 + T, b]
            assert set(bits.tolist()) <= {0, 1}
            exp_in, exp_tgt = tasks.copy_sequence(bits)
            assert xs[s:e, b].tolist() == exp_in.tolist()
            assert ys[s:e, b].tolist() == exp_tgt.tolist()
            lengths.append(T)
    assert min(lengths) >= max(1, T_start - 4) and max(lengths) <= T_start
    if T_start == 9:
        assert set(lengths) == {5, 6, 7, 8, 9}


def test_curriculum_advances_on_scripted_loss():
    cur = tasks.Curriculum()
    # from 0.3 with zero loss: 0.3 * 0.999^k < 0.15 first at k = ceil(ln 0.5 / ln 0.999)
    k = math.ceil(math.log(0.5) / math.log(0.999))
    advanced = [cur.update(0.0) for _ in range(k)]
    assert advanced == [False] * (k - 1) + [True]
    assert cur.T_cur == 2 and cur.running_loss == 0.3
    for _ in range(20000):  # a loss of 0.2 bits keeps the average above 0.15: never advances
        assert not cur.update(0.2)
    assert cur.T_cur == 2 and cur.running_loss == pytest.approx(0.2, abs=1e-6)


def test_copy_task_observe_drives_curriculum_and_lengths():
    task = tasks.CopyTask(batch_size=2, rng=1)
    advances = sum(task.observe(np.zeros(2)) for _ in range(700 * 5))
    assert advances == 5 and task.T_cur == 6
    _, _, resets = _play(task, 400)
    assert resets[20:].any()  # shorter old sequences end and new ones (up to T = 6) begin


def test_copy_task_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        tasks.CopyTask(batch_size=0)
    with pytest.raises(TypeError, match="curriculum"):
        tasks.CopyTask(curriculum=3)
    with pytest.raises(ValueError, match="decay"):
        tasks.Curriculum(decay=1.0)


def _write(tmp_path, text, name="t.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_load_corpus_vocab_and_split(tmp_path):
    text = "hello world, é!" * 4
    corpus = tasks.load_corpus(_write(tmp_path, text), valid_fraction=0.25)
    assert corpus.vocab == "".join(sorted(set(text)))
    decoded = "".join(corpus.vocab[i] for i in np.concatenate([corpus.train, corpus.valid]))
    assert decoded == text
    assert len(corpus.valid) == 15 and len(corpus.train) == 45


def test_load_corpus_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        tasks.load_corpus(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="empty"):
        tasks.load_corpus(_write(tmp_path, ""))
    with pytest.raises(ValueError, match="long enough"):
        tasks.load_corpus(_write(tmp_path, "abc"))


def test_charlm_stream_reads_next_characters(tmp_path):
    corpus = tasks.load_corpus(_write(tmp_path, "abcdefghij" * 3), valid_fraction=0.2)
    task = tasks.CharLM(corpus, batch_size=2, reset_every=4, rng=0)
    text, L = corpus.train, len(corpus.train)
    pos = task._pos.copy()
    wrapped = np.ones(2, dtype=bool)
    for t in range(60):
        x, y, reset = task.next()
        assert x.argmax(axis=1).tolist() == text[pos].tolist()
        assert y.tolist() == text[pos + 1].tolist()
        assert reset.tolist() == (wrapped | (t % 4 == 0)).tolist()
        pos = pos + 1
        wrapped = pos == L - 1
        pos[wrapped] = 0


def test_validation_bpc_of_uniform_model_is_log2_vocab(tmp_path):
    corpus = tasks.load_corpus(_write(tmp_path, "the quick brown fox jumps over the lazy dog " * 5))
    cell = kfrtrl.Elman(len(corpus.vocab), 6, rng=0)
    trainer = train.Trainer(kfrtrl.UORO(cell, rng=0, backend="numpy"), len(corpus.vocab), rng=0)
    trainer.readout.W[...] = 0.0
    bpc = tasks.validation_bpc(trainer, corpus, batch_size=3, reset_every=5)
    assert bpc == pytest.approx(np.log2(len(corpus.vocab)), rel=1e-12)


def test_bundled_tinyshakespeare_corpus():
    path = datasets.tinyshakespeare_path()
    assert path.is_file() and datasets.tinyshakespeare().startswith("First Citizen:\n")
    corpus = tasks.load_corpus(path)
    assert len(corpus.vocab) == 65 and corpus.vocab[0] == "\n"
    assert len(corpus.train) + len(corpus.valid) == 1115394
    task = tasks.CharLM(corpus, batch_size=4, rng=0)
    x, y, reset = task.next()
    assert x.shape == (4, 65) and reset.all()
