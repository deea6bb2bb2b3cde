"""`python -m normbench VERB ...`: the same as the `normbench` console script."""

import sys

from normbench.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
