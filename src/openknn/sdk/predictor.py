"""``Predictor`` / ``KNNPredictor``: call a local endpoint by name, as the SageMaker SDK's
predictor calls InvokeEndpoint."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import httpx

from ..errors import ModelError
from . import endpoints, service
from .serializers import (
    BaseDeserializer,
    BaseSerializer,
    BytesDeserializer,
    RecordDeserializer,
    RecordSerializer,
)

TIMEOUT_S = 60.0  # SageMaker's endpoint response limit


class Predictor:
    """Sends data to a named endpoint and deserializes the answer."""

    def __init__(self, endpoint_name: str, sagemaker_session: Any = None,
                 serializer: BaseSerializer | None = None,
                 deserializer: BaseDeserializer | None = None) -> None:
        self.endpoint_name = endpoint_name
        # a service.Session: InvokeEndpoint on openknn up; else the local endpoint by name
        self.sagemaker_session = sagemaker_session
        self.serializer = serializer or RecordSerializer()
        self.deserializer = deserializer or BytesDeserializer()
        self._client = endpoints.client(TIMEOUT_S)  # loopback: proxy variables ignored
        self._content_type: str | None = None  # SDK v1 notebooks assign these directly
        self._accept: str | None = None

    @property
    def endpoint(self) -> str:
        """SDK v1's name for ``endpoint_name``."""
        return self.endpoint_name

    @property
    def content_type(self) -> str:
        return self._content_type or self.serializer.content_type

    @content_type.setter
    def content_type(self, value: str) -> None:
        self._content_type = value

    @property
    def accept(self) -> str:
        return self._accept or ", ".join(self.deserializer.ACCEPT)

    @accept.setter
    def accept(self, value: str) -> None:
        self._accept = value

    def predict(self, data: Any, initial_args: Mapping[str, str] | None = None) -> Any:
        """Serialize ``data``, invoke the endpoint, deserialize the response.

        ``initial_args`` may override ``ContentType`` and ``Accept`` for this call, as the
        notebooks do; the body is then sent as given when it is already bytes or text.
        """
        args = dict(initial_args or {})
        content_type = args.get("ContentType", self.content_type)
        accept = args.get("Accept", self.accept)
        body = self.serializer.serialize(data)
        if isinstance(self.sagemaker_session, service.Session):
            content, answered = service.invoke(self.sagemaker_session, self.endpoint_name,
                                               body, content_type, accept)
            return self.deserializer.deserialize(io.BytesIO(content), answered)
        info = endpoints.describe(self.endpoint_name)
        try:
            r = self._client.post(f"{info.url}/invocations", content=body,
                                  headers={"Content-Type": content_type, "Accept": accept})
        except httpx.HTTPError as exc:
            raise endpoints.EndpointNotFound(
                f"Could not reach endpoint {self.endpoint_name!r} at {info.url} ({exc}); "
                "it may have been deleted") from None
        if r.status_code != 200:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text
            raise ModelError(f"Received client error ({r.status_code}) from endpoint "
                             f"{self.endpoint_name!r} with message: {message}")
        return self.deserializer.deserialize(io.BytesIO(r.content),
                                             r.headers.get("content-type", ""))

    def delete_endpoint(self, delete_endpoint_config: bool = True) -> None:
        """Stop the endpoint process and free its port (on the service: DeleteEndpoint,
        and DeleteEndpointConfig unless told not to)."""
        self._client.close()
        if isinstance(self.sagemaker_session, service.Session):
            service.delete_endpoint(self.sagemaker_session, self.endpoint_name,
                                    delete_endpoint_config)
            return
        endpoints.delete(self.endpoint_name)

    def delete_model(self) -> None:
        """On the service, DeleteModel (the model openknn's deploy made, named as the
        endpoint); locally nothing: the model files stay where training wrote them."""
        if isinstance(self.sagemaker_session, service.Session):
            service.delete_model(self.sagemaker_session, self.endpoint_name)


class KNNPredictor(Predictor):
    """The SDK's k-NN predictor: RecordIO-protobuf both ways by default."""

    def __init__(self, endpoint_name: str, sagemaker_session: Any = None,
                 serializer: BaseSerializer | None = None,
                 deserializer: BaseDeserializer | None = None) -> None:
        super().__init__(endpoint_name, sagemaker_session, serializer or RecordSerializer(),
                         deserializer or RecordDeserializer())
