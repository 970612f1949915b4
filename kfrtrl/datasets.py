"""Data shipped inside the package.

:func:`tinyshakespeare_path` and :func:`tinyshakespeare` give the
tinyshakespeare corpus (Karpathy's char-rnn collection of Shakespeare's
plays: 1,115,394 characters, 65 distinct, public domain), the default text
of ``kfrtrl charlm`` and of :class:`kfrtrl.tasks.CharLM` examples.

Examples
--------
>>> from kfrtrl import datasets, tasks
>>> corpus = tasks.load_corpus(datasets.tinyshakespeare_path())
>>> len(corpus.vocab)
65
"""
from importlib import resources
from pathlib import Path

__all__ = ["tinyshakespeare", "tinyshakespeare_path"]


def tinyshakespeare_path():
    """Path of the bundled tinyshakespeare text file.

    Returns
    -------
    pathlib.Path
        An existing UTF-8 text file of 1,115,394 characters (65 distinct) inside the
        installed package; read it, never write to it.
    """
    return Path(str(resources.files(__package__).joinpath("data", "tinyshakespeare.txt")))


def tinyshakespeare():
    """The bundled tinyshakespeare corpus as one string.

    Returns
    -------
    str
        1,115,394 characters, 65 distinct; the first line is ``"First Citizen:"``.
    """
    return tinyshakespeare_path().read_text(encoding="utf-8")
