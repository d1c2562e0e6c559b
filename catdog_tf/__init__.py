"""catdog_tf: cats vs dogs with TensorFlow.

The data flows one way: files -> records -> pipeline -> model -> predictions.
Each stage is one module; the `python -m catdog_tf.<stage>` entry points hold the flags.
"""

import os as _os

# TF's C++ INFO lines (oneDNN, CPU features) drown the progress output; warnings stay.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

__version__ = "0.1.0"
