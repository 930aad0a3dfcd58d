"""``python -m segwatch`` is the ``segwatch`` command."""
import sys

from segwatch.cli import main

if __name__ == "__main__":
    sys.exit(main())
