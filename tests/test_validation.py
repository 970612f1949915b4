"""Arguments that used to be accepted silently, or refused with a misleading message."""
import numpy as np
import pytest

import kfrtrl
from kfrtrl import tasks, train


def _estimator():
    return kfrtrl.UORO(kfrtrl.Elman(2, 3, rng=0), backend="numpy")


@pytest.mark.parametrize("make, exc, match", [
    (lambda: train.Trainer(_estimator(), 2, clip=0), ValueError, r"clip: expected a real number in \(0.0, inf\], got 0"),
    (lambda: train.Trainer(_estimator(), 2, clip=-1.0), ValueError, r"clip: .*got -1.0"),
    (lambda: train.Trainer(_estimator(), 2, lr=0), ValueError, r"lr: expected a real number in \(0.0, inf\), got 0"),
    (lambda: train.Trainer(_estimator(), 2, lr=0.0, optimizer="sgd"), ValueError, r"lr: .*\(0.0, inf\), got 0.0"),
    (lambda: train.Trainer(_estimator(), 2, lr=np.inf), ValueError, r"lr: .*got inf"),
    (lambda: train.Trainer(_estimator(), 2, lr=np.nan), ValueError, r"lr: .*got nan"),
    (lambda: train.Adam(beta1=1.0), ValueError, r"beta1: expected a real number in \[0.0, 1.0\), got 1.0"),
    (lambda: train.Adam(beta2=1.0), ValueError, r"beta2: expected a real number in \[0.0, 1.0\)"),
    (lambda: kfrtrl.Elman(2, 3, alpha=0), ValueError, r"alpha: expected a real number in \(0.0, 1.0\], got 0$"),
    (lambda: kfrtrl.Elman(2, 3, alpha=2), ValueError, r"alpha: expected a real number in \(0.0, 1.0\], got 2$"),
    (lambda: kfrtrl.OK(kfrtrl.Elman(4, 8), rank=1000), ValueError,
     r"rank: expected an integer in \[1, 13\] \(no influence of this Elman has a higher Kronecker rank\), got 1000"),
    (lambda: tasks.Curriculum(decay=1.0), ValueError, r"decay: expected a real number in \[0.0, 1.0\), got 1.0"),
])
def test_out_of_range_arguments_are_refused(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_ok_rank_bound_is_the_largest_kronecker_rank():
    """Elman(4, 8): W is 8 × 13, G a (8·8) × 13 matrix: rank 13 is accepted, 14 is not; the LSTM's
    W (32 × 13) with 16 state units allows 13 too."""
    assert kfrtrl.OK(kfrtrl.Elman(4, 8, rng=0), rank=13, backend="numpy").rank == 13
    with pytest.raises(ValueError, match=r"\[1, 13\]"):
        kfrtrl.OK(kfrtrl.Elman(4, 8, rng=0), rank=14)
    with pytest.raises(ValueError, match=r"\[1, 13\].*LSTM"):
        kfrtrl.OK(kfrtrl.LSTM(4, 8, rng=0), rank=14)


def test_corpus_that_is_a_directory_or_not_utf8(tmp_path):
    with pytest.raises(ValueError, match=r"path: expected a UTF-8 text file, got '.*' \(a directory\)"):
        tasks.load_corpus(tmp_path)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9 au lait ".encode("latin-1") * 3)
    with pytest.raises(ValueError, match=r"expected a UTF-8 text file, got '.*latin1.txt' \(byte 3 is not UTF-8: b'\\xe9'\)"):
        tasks.load_corpus(latin1)
