import sys

from flrp.cli import main

sys.exit(main())
