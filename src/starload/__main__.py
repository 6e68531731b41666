"""The ``starload`` program (and ``python -m starload``): signals are caught before the heavy imports."""

import sys

from starload import stopping


def main() -> int:
    stopping.catch()
    from starload.cli import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
