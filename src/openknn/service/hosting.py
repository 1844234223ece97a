"""SageMaker models and endpoint configurations on the service: CreateModel, DescribeModel,
ListModels, DeleteModel and the same four for endpoint configs (spec sagemaker-api.md §2).
Both are documents only: nothing runs until an endpoint uses them (``service.endpoints``).

SageMaker's wording is kept where the SDK branches on it (spec §4): ``Cannot create already
existing model "<arn>"`` (v2 ``deploy`` swallows it), ``Could not find model "<arn>".``; the
same for endpoint configurations. A config names models that must exist when it is made, as
SageMaker checks; deleting a model an endpoint still serves is allowed, as on SageMaker (the
endpoint keeps what it loaded)."""

from __future__ import annotations

import re
import time
from typing import Any

from openknn.service import validate
from openknn.service.api import ApiError, Caller, Handler, validation
from openknn.service.state import Doc, State
from openknn.service.training_jobs import KNN_IMAGE

MODEL, CONFIG = "model", "endpoint-config"
MODEL_NAME = re.compile(r"^[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?$")
VARIANT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
WHAT = {MODEL: "model", CONFIG: "endpoint configuration"}


def arn(caller: Caller, kind: str, name: str) -> str:
    """SageMaker's ARN of a resource: the name lower-cased, as SageMaker writes it (spec §5)."""
    return f"arn:aws:sagemaker:{caller.region}:{caller.account}:{kind}/{name.lower()}"


def not_found(kind: str, caller: Caller, name: object) -> ApiError:
    return validation(f'Could not find {WHAT[kind]} "{arn(caller, kind, str(name))}".')


def _exists(kind: str, caller: Caller, name: str) -> ApiError:
    return validation(f'Cannot create already existing {WHAT[kind]} '
                      f'"{arn(caller, kind, name)}".')


def model_name(value: object, where: str) -> str:
    if not isinstance(value, str) or len(value) > 63 or not MODEL_NAME.match(value):
        raise validation(f"1 validation error detected: Value {value!r} at '{where}' failed to "
                         "satisfy constraint: Member must satisfy regular expression pattern: "
                         "^[a-zA-Z0-9]([\\-a-zA-Z0-9]*[a-zA-Z0-9])? (letters, digits and "
                         "hyphens, at most 63)")
    return value


def _container(body: dict[str, Any]) -> dict[str, Any]:
    """The model's one container: PrimaryContainer, or a one-element Containers."""
    container = body.get("PrimaryContainer")
    containers = body.get("Containers")
    if container is None and isinstance(containers, list) and len(containers) == 1:
        container = containers[0]
    if container is None:
        raise validation("CreateModel needs PrimaryContainer (or one element in Containers): "
                         "the k-NN image and its ModelDataUrl")
    if not isinstance(container, dict):
        raise validation("PrimaryContainer must be an object with Image and ModelDataUrl")
    image = container.get("Image")
    if not isinstance(image, str) or not KNN_IMAGE.match(image):
        raise validation(f"Image {image!r} is not the built-in k-NN algorithm's image "
                         "(<registry>/knn:<tag>, as sagemaker.image_uris.retrieve('knn', "
                         "region) returns); openknn up serves only k-NN models")
    data = container.get("ModelDataUrl")
    if not isinstance(data, str):
        raise validation("PrimaryContainer.ModelDataUrl is required: the s3:// URI of the "
                         "model.tar.gz a k-NN training job wrote")
    validate.s3_uri(data, "primaryContainer.modelDataUrl")
    env = container.get("Environment") or {}
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise validation("PrimaryContainer.Environment must map names to strings")
    return {"Image": image, "Mode": container.get("Mode", "SingleModel"),
            "ModelDataUrl": data, "Environment": env}


def _variants(body: dict[str, Any], state: State, caller: Caller) -> list[dict[str, Any]]:
    variants = body.get("ProductionVariants")
    if not isinstance(variants, list) or not variants:
        raise validation("ProductionVariants is required: one or more variants, each with "
                         "VariantName, ModelName, InitialInstanceCount and InstanceType")
    out: list[dict[str, Any]] = []
    for i, variant in enumerate(variants):
        where = f"productionVariants.{i + 1}.member"
        if not isinstance(variant, dict):
            raise validation(f"{where} must be an object")
        name = variant.get("VariantName")
        if not isinstance(name, str) or not VARIANT_NAME.match(name):
            raise validation(f"1 validation error detected: Value {name!r} at "
                             f"'{where}.variantName' failed to satisfy constraint: Member must "
                             "satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])"
                             "{0,62}")
        if any(v["VariantName"] == name for v in out):
            raise validation(f"VariantName {name!r} is given twice; each variant once")
        model = model_name(variant.get("ModelName"), f"{where}.modelName")
        if state.get(MODEL, model) is None:
            raise not_found(MODEL, caller, model)
        if "ServerlessConfig" in variant:
            raise validation(f"Variant {name!r}: ServerlessConfig is not served by openknn up; "
                             "give InstanceType and InitialInstanceCount")
        count = variant.get("InitialInstanceCount", 1)
        if not isinstance(count, int) or not 1 <= count <= 16:
            raise validation(f"1 validation error detected: Value {count!r} at "
                             f"'{where}.initialInstanceCount' failed to satisfy constraint: "
                             "Member must have value between 1 and 16 (workers on this "
                             "machine)")
        validate.instance_type(variant.get("InstanceType"), f"{where}.instanceType",
                               "ProductionVariantInstanceType")
        weight = variant.get("InitialVariantWeight", 1.0)
        if not isinstance(weight, (int, float)) or weight < 0:
            raise validation(f"Variant {name!r}: InitialVariantWeight {weight!r} must be a "
                             "number >= 0")
        out.append({**variant, "InitialInstanceCount": count,
                    "InitialVariantWeight": float(weight)})
    if sum(v["InitialVariantWeight"] for v in out) <= 0:
        raise validation("The variants' InitialVariantWeight values are all 0; give at least "
                         "one a weight above 0")
    return out


class Hosting:
    """Models and endpoint configs: their documents in ``state``."""

    def __init__(self, state: State) -> None:
        self.state = state

    # -- models ------------------------------------------------------------------------------

    def create_model(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = model_name(body.get("ModelName"), "modelName")
        container = _container(body)
        role = body.get("ExecutionRoleArn")
        if role is not None:
            validate.role_arn(role, "executionRoleArn")
        model_arn = arn(caller, MODEL, name)
        doc: Doc = {"ModelName": name, "ModelArn": model_arn, "PrimaryContainer": container,
                    "ExecutionRoleArn": role, "CreationTime": time.time(),
                    "EnableNetworkIsolation": bool(body.get("EnableNetworkIsolation", False)),
                    "Tags": body.get("Tags") or []}
        if role is None:
            del doc["ExecutionRoleArn"]
        if not self.state.insert(MODEL, name, doc):
            raise _exists(MODEL, caller, name)
        return {"ModelArn": model_arn}

    def describe_model(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        doc = self._get(MODEL, body.get("ModelName"), caller)
        doc.pop("Tags", None)
        return doc

    def delete_model(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = body.get("ModelName")
        if not isinstance(name, str) or not self.state.delete(MODEL, name):
            raise not_found(MODEL, caller, name)
        return {}

    def list_models(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        return validate.listing(self.state.resources(MODEL), body, "ModelName", "Models",
                                ("ModelName", "ModelArn", "CreationTime"))

    # -- endpoint configs --------------------------------------------------------------------

    def create_config(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = validate.resource_name(body.get("EndpointConfigName"), "endpointConfigName")
        variants = _variants(body, self.state, caller)
        config_arn = arn(caller, CONFIG, name)
        doc: Doc = {"EndpointConfigName": name, "EndpointConfigArn": config_arn,
                    "ProductionVariants": variants, "CreationTime": time.time(),
                    "Tags": body.get("Tags") or []}
        for optional in ("DataCaptureConfig", "KmsKeyId", "AsyncInferenceConfig"):
            if optional in body:
                doc[optional] = body[optional]
        if not self.state.insert(CONFIG, name, doc):
            raise _exists(CONFIG, caller, name)
        return {"EndpointConfigArn": config_arn}

    def describe_config(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        doc = self._get(CONFIG, body.get("EndpointConfigName"), caller)
        doc.pop("Tags", None)
        return doc

    def delete_config(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = body.get("EndpointConfigName")
        if not isinstance(name, str) or not self.state.delete(CONFIG, name):
            raise not_found(CONFIG, caller, name)
        return {}

    def list_configs(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        return validate.listing(self.state.resources(CONFIG), body, "EndpointConfigName",
                                "EndpointConfigs", ("EndpointConfigName", "EndpointConfigArn",
                                                    "CreationTime"))

    def _get(self, kind: str, name: object, caller: Caller) -> Doc:
        doc = self.state.get(kind, name) if isinstance(name, str) else None
        if doc is None:
            raise not_found(kind, caller, name)
        return doc

    def handlers(self) -> dict[str, Handler]:
        return {"CreateModel": self.create_model, "DescribeModel": self.describe_model,
                "DeleteModel": self.delete_model, "ListModels": self.list_models,
                "CreateEndpointConfig": self.create_config,
                "DescribeEndpointConfig": self.describe_config,
                "DeleteEndpointConfig": self.delete_config,
                "ListEndpointConfigs": self.list_configs}


