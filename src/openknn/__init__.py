"""openknn: Amazon SageMaker's built-in k-NN algorithm, re-implemented on faiss."""

from __future__ import annotations

__version__ = "0.1.0"
