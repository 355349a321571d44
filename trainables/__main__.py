import sys

from trainables.cli import main

sys.exit(main())
