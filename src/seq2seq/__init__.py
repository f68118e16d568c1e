"""seq2seq: train LSTM encoder-decoder networks on pairs of texts and generate with them."""

import os

# JAX is the default backend (fastest on CPU here); KERAS_BACKEND=tensorflow selects the
# textbook's stack. This must happen before Keras is first imported.
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from . import backend
from .api import Seq2Seq
from .config import Config

backend.enable_compilation_cache()

__all__ = ["Config", "Seq2Seq"]
__version__ = "0.1.0"
