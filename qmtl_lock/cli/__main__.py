"""``python -m qmtl_lock.cli``: the command line without the console script."""

from qmtl_lock.cli import main

if __name__ == "__main__":
    main()
