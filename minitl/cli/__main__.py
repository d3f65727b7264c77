import sys

from minitl.cli import main

sys.exit(main())
