"""`python -m seq2seq ...`: the same as the `seq2seq` command."""

import sys

from .launch import main

sys.exit(main())
