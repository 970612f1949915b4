"""``python -m kfrtrl``: the same as the ``kfrtrl`` command (see :mod:`kfrtrl.cli`)."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
