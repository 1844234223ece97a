"""openknn: Amazon SageMaker's built-in k-NN algorithm, re-implemented on faiss.

The public API is what ``__all__`` lists: the SageMaker Python SDK surface (``KNN``,
``Estimator``, ``Predictor``, the serializers and RecordIO helpers, also importable from
``openknn.sdk``), ``train`` (``openknn train`` as a function), ``load_model`` and
``KnnModel`` (a trained model in this process), ``serve`` (``openknn serve``), and the
errors. Everything else is internal and may move between releases.

Names load on first use (PEP 562 ``__getattr__``): ``import openknn`` costs only the errors,
and ``openknn.serve`` alone brings in the server stack, so ``import openknn.sdk`` never does.

"Decision N", wherever the code, tests and docs cite it, is section N of docs/decisions.md:
what openknn does where SageMaker's behaviour is not public, or where it departs from it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    AlgorithmError,
    ChannelError,
    ClientError,
    DataError,
    HyperparameterError,
    MissingExtraError,
    ModelError,
    OpenKnnError,
)

__version__ = "0.1.0"

_SDK = ("KNN", "Estimator", "KNNModel", "Model", "RecordSet", "TrainingInput",
        "UnexpectedStatusException", "image_uri", "KNNPredictor", "Predictor", "Session",
        "EndpointNotFound", "list_endpoints", "BytesDeserializer", "CSVDeserializer",
        "CSVSerializer", "JSONDeserializer", "JSONLinesDeserializer", "JSONLinesSerializer",
        "JSONSerializer", "Record", "RecordDeserializer", "RecordSerializer", "csv_serializer",
        "json_deserializer", "json_serializer", "read_records", "write_numpy_to_dense_tensor",
        "write_spmatrix_to_sparse_tensor")
# name -> (module, attribute)
_LAZY: dict[str, tuple[str, str]] = {
    **{name: ("openknn.sdk", name) for name in _SDK},
    "train": ("openknn.jobs.training", "train"),
    "TrainingResult": ("openknn.jobs.training", "TrainingResult"),
    "load_model": ("openknn.jobs.artifact", "load"),
    "KnnModel": ("openknn.core.model", "KnnModel"),
    "serve": ("openknn.serving.server", "serve"),
    "ServingSettings": ("openknn.settings", "ServingSettings"),
}
__all__ = [
    "__version__", "train", "TrainingResult", "load_model", "KnnModel", "serve",
    "ServingSettings", "OpenKnnError", "ClientError", "AlgorithmError", "HyperparameterError",
    "DataError", "ChannelError", "ModelError", "MissingExtraError", "KNN", "Estimator",
    "KNNModel", "Model", "RecordSet", "TrainingInput", "UnexpectedStatusException",
    "image_uri", "KNNPredictor", "Predictor", "Session", "EndpointNotFound", "list_endpoints",
    "BytesDeserializer", "CSVDeserializer", "CSVSerializer", "JSONDeserializer",
    "JSONLinesDeserializer", "JSONLinesSerializer", "JSONSerializer", "Record",
    "RecordDeserializer", "RecordSerializer", "csv_serializer", "json_deserializer",
    "json_serializer", "read_records", "write_numpy_to_dense_tensor",
    "write_spmatrix_to_sparse_tensor",
]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'openknn' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and editors see for the lazy names
    from .core.model import KnnModel
    from .jobs.artifact import load as load_model
    from .jobs.training import TrainingResult, train
    from .sdk import (
        KNN,
        BytesDeserializer,
        CSVDeserializer,
        CSVSerializer,
        EndpointNotFound,
        Estimator,
        JSONDeserializer,
        JSONLinesDeserializer,
        JSONLinesSerializer,
        JSONSerializer,
        KNNModel,
        KNNPredictor,
        Model,
        Predictor,
        Record,
        RecordDeserializer,
        RecordSerializer,
        RecordSet,
        Session,
        TrainingInput,
        UnexpectedStatusException,
        csv_serializer,
        image_uri,
        json_deserializer,
        json_serializer,
        list_endpoints,
        read_records,
        write_numpy_to_dense_tensor,
        write_spmatrix_to_sparse_tensor,
    )
    from .serving.server import serve
    from .settings import ServingSettings
