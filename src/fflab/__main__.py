"""``python -m fflab``: the ``fflab`` command where its script is not on the PATH (e.g. a
checkout used through ``PYTHONPATH=src``, as ``benchmarks/gpu_run.sh`` does)."""
import sys

from .cli.main import main

sys.exit(main())
