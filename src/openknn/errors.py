"""The one exception hierarchy of openknn: every error a user can see, with its HTTP status
and SageMaker failure prefix."""

from __future__ import annotations


class OpenKnnError(Exception):
    """Base class. ``prefix`` is what SageMaker writes before the message in a failure file."""

    prefix = "AlgorithmError"
    status = 500

    def failure_reason(self) -> str:
        """The line written to ``/opt/ml/output/failure`` or stderr."""
        return f"{self.prefix}: {self}"


class ClientError(OpenKnnError):
    """The user's input is wrong; the message says what to change."""

    prefix = "ClientError"
    status = 400


class HyperparameterError(ClientError, ValueError):
    """A hyperparameter is missing, unknown, unparsable or out of range."""


class DataError(ClientError, ValueError):
    """A data file or request body cannot be read as the declared format."""


class ChannelError(ClientError, FileNotFoundError):
    """A channel is missing, empty or names a location that cannot be read."""


class ModelError(ClientError, ValueError):
    """A model cannot be used or did not answer: its artifact is missing a file, is malformed
    or is unsafe to unpack, or (from ``Predictor.predict``, as the SageMaker SDK's
    InvokeEndpoint ``ModelError``) the endpoint answered an error. The one class of both, so
    ``openknn.ModelError`` and ``openknn.sdk.ModelError`` catch the same errors."""


class TrainingError(ClientError, ValueError):
    """The data and hyperparameters cannot make an index (e.g. too few points)."""


class UnsupportedMediaType(ClientError, ValueError):
    """A Content-Type openknn cannot read."""

    status = 415


class NotAcceptable(ClientError, ValueError):
    """An Accept type openknn cannot write."""

    status = 406


class PayloadTooLarge(ClientError, ValueError):
    """A request body over the payload limit."""

    status = 413


class RequestTimeout(ClientError, TimeoutError):
    """A request body that did not all arrive in time."""

    status = 408


class MissingExtraError(OpenKnnError, ImportError):
    """An optional extra (``[s3]``, ``[ray]``, ``[gpu]``) is needed but not installed."""

    prefix = "ClientError"
    status = 500

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the optional module {module!r}, which is not installed; "
            f"install it with: pip install 'openknn[{extra}]'"
        )


class DownloadError(ClientError, ConnectionError):
    """A data set could not be downloaded (no network, or the host refused)."""


class AlgorithmError(OpenKnnError, RuntimeError):
    """openknn itself failed (a bug or an environment fault), not the user's input."""
