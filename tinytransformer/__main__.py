"""``python -m tinytransformer ...``: the command line of ``tinytransformer.cli``."""

from .cli import main

raise SystemExit(main())
