import sys

from annal.broker.cli import main

sys.exit(main())
