"""The papers' tasks as streams of per-step batches for online training.

A task hands the trainer one step at a time: :meth:`next` returns
``(x, y, reset)`` with ``x`` (batch, n_in) one-hot inputs of the requested
dtype, ``y`` (batch,) int64 target classes and ``reset`` (batch,) bool, True
for the samples whose state must be zeroed *before* this step (a new
sequence starts). :meth:`observe` feeds the per-sample loss of that step
and the model's output back (the copy task's curriculum uses the loss, the
series task the output). ``state_dict`` /
``load_state_dict`` make a stopped run resumable bit for bit.

- :class:`CopyTask`: string memorisation with the KF-RTRL / OK papers'
  curriculum (:class:`Curriculum`).
- :class:`CharLM`: character-level language modelling on any text file
  (:func:`load_corpus` builds the vocabulary and the train/validation split).
- :class:`Series`: online regression on a numeric time series (:mod:`kfrtrl.series`).
"""
import copy
import os
from dataclasses import dataclass

import numpy as np

from . import datasets
from ._validation import as_generator, check_choice, check_dtype, check_float, check_int
from .series import Series  # noqa: F401  (a task like the others)

MARKER, BLANK = 2, 3
"""Copy-task symbols: bits are 0 and 1, then the start marker and the blank."""


def one_hot(ids, n_classes, dtype=np.float64):
    """One-hot rows of the classes ``ids``; cost O(batch·n_classes).

    Parameters
    ----------
    ids : (batch,) int array
        Classes in [0, n_classes).
    n_classes : int >= 1
    dtype : numpy dtype of the result

    Returns
    -------
    (batch, n_classes) array of ``dtype``
    """
    out = np.zeros((len(ids), n_classes), dtype=dtype)
    out[np.arange(len(ids)), ids] = 1.0
    return out


def copy_sequence(bits):
    """The copy task's (input, target) symbol sequences for one string.

    Parameters
    ----------
    bits : (T,) int array of 0/1

    Returns
    -------
    inputs, targets : (2T + 2,) int64 arrays
        inputs  = [MARKER, b_1..b_T, BLANK × (T+1)],
        targets = [BLANK × (T+1), MARKER, b_1..b_T].
    """
    bits = np.asarray(bits, dtype=np.int64)
    T = len(bits)
    blanks = np.full(T + 1, BLANK, dtype=np.int64)
    inputs = np.concatenate([[MARKER], bits, blanks])
    targets = np.concatenate([blanks, [MARKER], bits])
    return inputs, targets


class Curriculum:
    """The copy task's curriculum on the running loss.

    The running loss is an exponential moving average (``decay``) of the
    per-step cross-entropy in bits. When it falls below ``threshold``,
    ``T_cur`` grows by one and the average is set back to ``reset_value``.
    It starts at ``start_value`` (default ``reset_value``; the papers leave
    the start unsaid, the OK authors' code starts at 1 bit).

    Parameters
    ----------
    T_start : int >= 1
        The first sequence length.
    decay : float in [0, 1)
        Of the running loss.
    threshold, reset_value : float >= 0
        In bits.
    start_value : float >= 0 or None
        The running loss at the start (None: ``reset_value``).
    """

    def __init__(self, T_start=1, decay=0.999, threshold=0.15, reset_value=0.3, start_value=None):
        self.T_cur = check_int("T_start", T_start, 1)
        self.decay = check_float("decay", decay, 0.0, 1.0, open_high=True)
        self.threshold = check_float("threshold", threshold, 0.0, np.inf)
        self.reset_value = check_float("reset_value", reset_value, 0.0, np.inf)
        start = self.reset_value if start_value is None else check_float("start_value", start_value, 0.0, np.inf)
        self.running_loss = start

    def update(self, loss_bits, check=True):
        """Fold one step's loss into the running loss and maybe advance ``T_cur``.

        Parameters
        ----------
        loss_bits : float
            The step's cross-entropy in bits (batch mean).
        check : bool
            False only updates the average (``T_cur`` is compared at chosen steps).

        Returns
        -------
        bool
            Whether ``T_cur`` advanced.
        """
        self.running_loss = self.decay * self.running_loss + (1.0 - self.decay) * float(loss_bits)
        if check and self.running_loss < self.threshold:
            self.T_cur += 1
            self.running_loss = self.reset_value
            return True
        return False

    def state_dict(self):
        """``{"T_cur": int, "running_loss": float}``."""
        return {"T_cur": self.T_cur, "running_loss": self.running_loss}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s values.

        Parameters
        ----------
        state : dict, as returned by :meth:`state_dict`
        """
        self.T_cur = int(state["T_cur"])
        self.running_loss = float(state["running_loss"])


class CopyTask:
    """String memorisation with the papers' curriculum, ``batch_size`` streams.

    Alphabet {0, 1} plus a start marker and a blank (4 symbols, one-hot in,
    4 classes out). Each stream plays sequences back to back; every new
    sequence has length ``T = max(1, T_cur − U{0..4})``, fresh random bits
    and starts from a zero state (``reset`` is True on its first step). The
    loss fed to :meth:`observe` is averaged over the batch and drives the
    :class:`Curriculum`. Figure of merit: ``T_cur`` after a number of steps.

    Parameters
    ----------
    batch_size : int >= 1
        Streams.
    curriculum : Curriculum or None (a default one)
    rng : None, int or numpy.random.Generator
        Draws the lengths and the bits.
    dtype : float32 or float64
        Of the inputs.
    check : {"step", "sequence_end"}
        T_cur may advance after any step, or only after a step that ends some stream's sequence
        (as in the OK authors' code; the running loss is still updated every step).

    Notes
    -----
    Cost O(batch) per step.

    References
    ----------
    A. Mujika, F. Meier and A. Steger, "Approximating real-time recurrent learning with
    random Kronecker factors", NeurIPS 2018 (the task and its curriculum).
    """

    n_in = n_out = 4

    def __init__(self, batch_size=1, curriculum=None, rng=None, dtype=np.float64, check="step"):
        self.batch_size = check_int("batch_size", batch_size, 1)
        if curriculum is not None and not isinstance(curriculum, Curriculum):
            raise TypeError(f"curriculum: expected a kfrtrl.tasks.Curriculum or None, got {type(curriculum).__name__}")
        self.curriculum = Curriculum() if curriculum is None else curriculum
        self.rng = as_generator(rng)
        self.dtype = check_dtype("dtype", dtype)
        self.check = check_choice("check", check, ("step", "sequence_end"))
        self._inputs = [np.zeros(0, dtype=np.int64)] * self.batch_size
        self._targets = [np.zeros(0, dtype=np.int64)] * self.batch_size
        self._pos = np.zeros(self.batch_size, dtype=np.int64)

    @property
    def T_cur(self):
        """The curriculum's current sequence length (int)."""
        return self.curriculum.T_cur

    def _new_sequence(self, b):
        T = max(1, self.curriculum.T_cur - int(self.rng.integers(0, 5)))
        bits = self.rng.integers(0, 2, size=T)
        self._inputs[b], self._targets[b] = copy_sequence(bits)
        self._pos[b] = 0

    def next(self):
        """The next step of every stream.

        Returns
        -------
        x : (batch, 4) one-hot array of ``dtype``
        y : (batch,) int64 array of target symbols
        reset : (batch,) bool array
            True where a new sequence starts (zero the state before this step).
        """
        reset = np.zeros(self.batch_size, dtype=bool)
        for b in range(self.batch_size):
            if self._pos[b] >= len(self._inputs[b]):
                self._new_sequence(b)
                reset[b] = True
        x_ids = np.array([self._inputs[b][self._pos[b]] for b in range(self.batch_size)])
        y = np.array([self._targets[b][self._pos[b]] for b in range(self.batch_size)], dtype=np.int64)
        self._pos += 1
        return one_hot(x_ids, self.n_in, self.dtype), y, reset

    def observe(self, loss_bits, output=None):
        """Feed the last step's losses to the curriculum.

        Parameters
        ----------
        loss_bits : (batch,) float array
            Per-sample cross-entropy in bits.
        output : (batch, 4) array or None
            The model's output (unused here; the task interface passes it).

        Returns
        -------
        bool
            Whether ``T_cur`` advanced.
        """
        check = self.check == "step" or any(self._pos[b] >= len(self._inputs[b]) for b in range(self.batch_size))
        return self.curriculum.update(np.mean(loss_bits), check)

    def state_dict(self):
        """RNG state, curriculum, the streams' sequences and positions: a bit-identical resume."""
        return {
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "curriculum": self.curriculum.state_dict(),
            "inputs": [a.copy() for a in self._inputs],
            "targets": [a.copy() for a in self._targets],
            "pos": self._pos.copy(),
        }

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s values (same ``batch_size``).

        Parameters
        ----------
        state : dict, as returned by :meth:`state_dict`
        """
        if len(state["inputs"]) != self.batch_size:
            raise ValueError(
                f"state: expected a CopyTask state with batch_size {self.batch_size}, got {len(state['inputs'])}"
            )
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])
        self.curriculum.load_state_dict(state["curriculum"])
        self._inputs = [np.array(a, dtype=np.int64) for a in state["inputs"]]
        self._targets = [np.array(a, dtype=np.int64) for a in state["targets"]]
        self._pos = np.array(state["pos"], dtype=np.int64)


@dataclass
class Corpus:
    """A text as class ids (see :func:`load_corpus`).

    Parameters
    ----------
    vocab : str, the sorted distinct characters (class i is ``vocab[i]``)
    train, valid : (L,) int64 arrays, the training and validation texts as classes
    """

    vocab: str
    train: np.ndarray
    valid: np.ndarray


def load_corpus(path=None, valid_fraction=0.1):
    """Read a UTF-8 text file; vocabulary from the whole file; the last ``valid_fraction`` is validation.

    Parameters
    ----------
    path : str, os.PathLike or None
        None reads the bundled tinyshakespeare (:func:`kfrtrl.datasets.tinyshakespeare_path`).
    valid_fraction : float in [0, 1]

    Returns
    -------
    Corpus

    Raises
    ------
    FileNotFoundError
        If ``path`` is missing.
    ValueError
        If it is a directory, not UTF-8, empty or too short to give at least 2 characters to each part.
    """
    valid_fraction = check_float("valid_fraction", valid_fraction, 0.0, 1.0)
    path = datasets.tinyshakespeare_path() if path is None else path
    if os.path.isdir(path):
        raise ValueError(f"path: expected a UTF-8 text file, got {str(path)!r} (a directory)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path: expected an existing text file, got {str(path)!r} (not found)")
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"path: expected a UTF-8 text file, got {str(path)!r} (byte {exc.start} is not "
                         f"UTF-8: {data[exc.start:exc.start + 1]!r})") from None
    if not text:
        raise ValueError(f"path: expected a non-empty text file, got {str(path)!r} (empty)")
    codes, ids = np.unique(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32), return_inverse=True)
    vocab = "".join(chr(c) for c in codes)
    ids = ids.astype(np.int64)
    n_valid = int(round(len(ids) * valid_fraction))
    if n_valid < 2 or len(ids) - n_valid < 2:
        raise ValueError(
            f"path: expected a text long enough for >= 2 training and >= 2 validation characters "
            f"(valid_fraction={valid_fraction}), got {len(ids)} characters in {str(path)!r}"
        )
    return Corpus(vocab, ids[: len(ids) - n_valid], ids[len(ids) - n_valid:])


class CharLM:
    """Character-level language modelling: ``batch_size`` streams over the training text.

    Stream b starts at ``b·L/B + offset`` (offset drawn once from ``rng``),
    reads one character per step (input: that character one-hot, target:
    the next one) and wraps round at the end of the text (with a state
    reset). With ``reset_every = K`` all states are reset every K steps.

    Parameters
    ----------
    corpus : Corpus (:func:`load_corpus`)
    batch_size : int >= 1
        Streams.
    reset_every : int >= 1 or None (never)
    rng : None, int or numpy.random.Generator
        Draws the offset.
    dtype : float32 or float64
        Of the inputs.

    Notes
    -----
    Cost O(batch·vocabulary) per step.
    """

    def __init__(self, corpus, batch_size=1, reset_every=None, rng=None, dtype=np.float64):
        if not isinstance(corpus, Corpus):
            raise TypeError(f"corpus: expected a kfrtrl.tasks.Corpus (see load_corpus), got {type(corpus).__name__}")
        self.corpus = corpus
        self.n_in = self.n_out = len(corpus.vocab)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.reset_every = None if reset_every is None else check_int("reset_every", reset_every, 1)
        self.dtype = check_dtype("dtype", dtype)
        L = len(corpus.train) - 1
        offset = int(as_generator(rng).integers(0, L))
        self._pos = (np.arange(self.batch_size) * L // self.batch_size + offset) % L
        self._steps = 0
        self._wrapped = np.ones(self.batch_size, dtype=bool)

    def next(self):
        """The next character of every stream.

        Returns
        -------
        x : (batch, vocabulary) one-hot array of ``dtype``
        y : (batch,) int64 array, the next characters
        reset : (batch,) bool array
            True where the state is zeroed before this step.
        """
        reset = self._wrapped.copy()
        if self.reset_every is not None and self._steps % self.reset_every == 0:
            reset[:] = True
        text = self.corpus.train
        x = one_hot(text[self._pos], self.n_in, self.dtype)
        y = text[self._pos + 1].copy()
        self._pos += 1
        self._wrapped = self._pos >= len(text) - 1
        self._pos[self._wrapped] = 0
        self._steps += 1
        return x, y, reset

    def observe(self, loss_bits, output=None):
        """No feedback needed (kept for the task interface).

        Parameters
        ----------
        loss_bits : (batch,) float array, unused
        output : (batch, vocabulary) array or None, unused

        Returns
        -------
        bool, False
        """
        return False

    def state_dict(self):
        """The streams' positions and the step count."""
        return {"pos": self._pos.copy(), "steps": self._steps, "wrapped": self._wrapped.copy()}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s values (same ``batch_size``).

        Parameters
        ----------
        state : dict, as returned by :meth:`state_dict`
        """
        if len(state["pos"]) != self.batch_size:
            raise ValueError(f"state: expected a CharLM state with batch_size {self.batch_size}, got {len(state['pos'])}")
        self._pos = np.array(state["pos"], dtype=np.int64)
        self._steps = int(state["steps"])
        self._wrapped = np.array(state["wrapped"], dtype=bool)


def validation_bpc(trainer, corpus, batch_size=16, reset_every=None, max_chars=None, burn_in=0):
    """Bits per character of ``trainer``'s model on ``corpus.valid`` (no learning).

    The validation text (its first ``max_chars`` characters if given) is cut
    into ``batch_size`` contiguous chunks read in parallel from a zero state
    (reset every ``reset_every`` characters if given); every next-character
    prediction counts once. With ``burn_in`` > 0 each chunk's state is first
    run, uncounted, over the ``burn_in`` characters before the chunk (the end
    of the training text for the first): a model trained on a stream that
    never resets has not learnt to leave the zero state, and can stay in a
    regime of its own from it for thousands of characters (docs/papers_scale.md).
    Cost: one forward pass per character, burn-in included.

    Parameters
    ----------
    trainer : kfrtrl.train.Trainer, whose cell and readout are evaluated
    corpus : Corpus
    batch_size : int >= 1, chunks read in parallel
    reset_every : int >= 1 or None
    max_chars : int >= 2 or None (the whole validation text)
    burn_in : int >= 0, at most the training text's length; not with ``reset_every``

    Returns
    -------
    float
        The mean cross-entropy in bits.
    """
    batch_size = check_int("batch_size", batch_size, 1)
    burn_in = check_int("burn_in", burn_in, 0)
    if burn_in and reset_every is not None:
        raise ValueError(f"burn_in: a state reset every {reset_every} characters has nothing to carry, got "
                         f"burn_in {burn_in} with reset_every {reset_every}")
    if burn_in > len(corpus.train):
        raise ValueError(f"burn_in: expected at most the training text's {len(corpus.train)} characters, got {burn_in}")
    ids = corpus.valid if max_chars is None else corpus.valid[: check_int("max_chars", max_chars, 2)]
    batch_size = min(batch_size, len(ids) - 1)
    T = (len(ids) - 1) // batch_size
    text = np.concatenate([corpus.train[len(corpus.train) - burn_in:], ids])
    starts = np.arange(batch_size) * T + burn_in          # the chunks' first characters in ``text``
    total = 0.0
    s = trainer.cell.initial_state(batch_size)
    for t in range(-burn_in, T):
        if reset_every is not None and t % reset_every == 0:
            s[:] = 0.0
        x = one_hot(text[starts + t], len(corpus.vocab), trainer.cell.dtype)
        s, _ = trainer.cell.forward(s, x)
        if t >= 0:
            total += float(np.sum(trainer.readout.loss_bits(s[:, trainer.cell.out], text[starts + t + 1])))
    return total / (T * batch_size)
