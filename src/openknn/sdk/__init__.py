"""The SageMaker Python SDK's k-NN surface: ``KNN`` / ``Estimator`` ``fit`` → ``deploy`` →
``Predictor.predict`` → ``delete_endpoint``, and the RecordIO helpers; running local
processes, or on ``openknn up`` with ``sagemaker_session=Session()``."""

from __future__ import annotations

from ..errors import ModelError
from .endpoints import EndpointNotFound, list_endpoints
from .estimator import (
    KNN,
    Estimator,
    KNNModel,
    Model,
    RecordSet,
    TrainingInput,
    image_uri,
)
from .predictor import KNNPredictor, Predictor
from .serializers import (
    BytesDeserializer,
    CSVDeserializer,
    CSVSerializer,
    JSONDeserializer,
    JSONLinesDeserializer,
    JSONLinesSerializer,
    JSONSerializer,
    Record,
    RecordDeserializer,
    RecordSerializer,
    csv_serializer,
    json_deserializer,
    json_serializer,
    read_records,
    write_numpy_to_dense_tensor,
    write_spmatrix_to_sparse_tensor,
)
from .service import Session, UnexpectedStatusException

__all__ = [
    "KNN", "BytesDeserializer", "CSVDeserializer", "CSVSerializer", "EndpointNotFound",
    "Estimator", "JSONDeserializer", "JSONLinesDeserializer", "JSONLinesSerializer",
    "JSONSerializer", "KNNModel", "KNNPredictor", "Model", "ModelError", "Predictor", "Record",
    "RecordDeserializer", "RecordSerializer", "RecordSet", "Session", "TrainingInput",
    "UnexpectedStatusException", "csv_serializer", "image_uri", "json_deserializer",
    "json_serializer", "list_endpoints", "read_records", "write_numpy_to_dense_tensor",
    "write_spmatrix_to_sparse_tensor",
]
