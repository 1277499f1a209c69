"""JSON schemas for the Kubernetes objects in deploy/, written for the fields those files use
(Kubernetes' own OpenAPI schemas cannot be downloaded here). Every object is closed
(`additionalProperties: false`), so a misspelt or misplaced field fails validation."""

from __future__ import annotations

from typing import Any


def closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


STRING = {"type": "string"}
NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
QUANTITY = {"type": ["string", "integer"], "pattern": r"^[0-9.]+([mKMGTPE]i?)?$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
INT = {"type": "integer", "minimum": 0}

METADATA = closed({"name": NAME, "namespace": NAME, "labels": STRING_MAP}, ("name",))
RESOURCES = closed(
    {
        "requests": {"type": "object", "additionalProperties": QUANTITY},
        "limits": {"type": "object", "additionalProperties": QUANTITY},
    }
)
ENV_VAR = closed(
    {
        "name": STRING,
        "value": STRING,
        "valueFrom": closed(
            {"secretKeyRef": closed({"name": NAME, "key": STRING}, ("name", "key"))}
        ),
    },
    ("name",),
)
CONTAINER = closed(
    {
        "name": NAME,
        "image": STRING,
        "workingDir": STRING,
        "command": {"type": "array", "items": STRING},
        "args": {"type": "array", "items": STRING},
        "env": {"type": "array", "items": ENV_VAR},
        "resources": RESOURCES,
        "ports": {
            "type": "array",
            "items": closed(
                {"containerPort": {"type": "integer"}, "name": STRING}, ("containerPort",)
            ),
        },
        "volumeMounts": {
            "type": "array",
            "items": closed(
                {"name": NAME, "mountPath": STRING, "readOnly": {"type": "boolean"}},
                ("name", "mountPath"),
            ),
        },
    },
    ("name", "image"),
)
VOLUME = closed(
    {
        "name": NAME,
        "configMap": closed({"name": NAME}, ("name",)),
        "secret": closed({"secretName": NAME}, ("secretName",)),
    },
    ("name",),
)
POD_SPEC = closed(
    {
        "containers": {"type": "array", "items": CONTAINER, "minItems": 1},
        "volumes": {"type": "array", "items": VOLUME},
        "serviceAccountName": NAME,
        "restartPolicy": {"enum": ["Always", "OnFailure", "Never"]},
        "nodeSelector": STRING_MAP,
        "tolerations": {
            "type": "array",
            "items": closed(
                {
                    "key": STRING,
                    "operator": {"enum": ["Exists", "Equal"]},
                    "value": STRING,
                    "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
                }
            ),
        },
    },
    ("containers",),
)
POD_TEMPLATE = closed({"metadata": closed({"labels": STRING_MAP}), "spec": POD_SPEC}, ("spec",))
RAY_START_PARAMS = {"type": "object", "additionalProperties": {"type": "string"}}
RAY_CLUSTER_SPEC = closed(
    {
        "rayVersion": STRING,
        "enableInTreeAutoscaling": {"type": "boolean"},
        "autoscalerOptions": closed({"idleTimeoutSeconds": INT}),
        "headGroupSpec": closed(
            {"rayStartParams": RAY_START_PARAMS, "template": POD_TEMPLATE}, ("template",)
        ),
        "workerGroupSpecs": {
            "type": "array",
            "items": closed(
                {
                    "groupName": NAME,
                    "replicas": INT,
                    "minReplicas": INT,
                    "maxReplicas": INT,
                    "rayStartParams": RAY_START_PARAMS,
                    "template": POD_TEMPLATE,
                },
                ("groupName", "template"),
            ),
        },
    },
    ("rayVersion", "headGroupSpec"),
)


def _object(api: str, kind: str, spec: dict[str, Any] | None, **more: Any) -> dict[str, Any]:
    properties = {"apiVersion": {"const": api}, "kind": {"const": kind}, "metadata": METADATA}
    properties.update({"spec": spec} if spec else {})
    properties.update(more)
    return closed(properties, ("apiVersion", "kind", "metadata", *(("spec",) if spec else ())))


SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("v1", "ConfigMap"): _object("v1", "ConfigMap", None, data=STRING_MAP),
    ("batch/v1", "CronJob"): _object(
        "batch/v1",
        "CronJob",
        closed(
            {
                "schedule": {"type": "string", "pattern": r"^(\S+\s+){4}\S+$"},
                "concurrencyPolicy": {"enum": ["Allow", "Forbid", "Replace"]},
                "jobTemplate": closed(
                    {
                        "spec": closed(
                            {"backoffLimit": INT, "template": POD_TEMPLATE}, ("template",)
                        )
                    },
                    ("spec",),
                ),
            },
            ("schedule", "jobTemplate"),
        ),
    ),
    ("ray.io/v1", "RayJob"): _object(
        "ray.io/v1",
        "RayJob",
        closed(
            {
                "entrypoint": STRING,
                "runtimeEnvYAML": STRING,
                "shutdownAfterJobFinishes": {"type": "boolean"},
                "ttlSecondsAfterFinished": INT,
                "activeDeadlineSeconds": INT,
                "backoffLimit": INT,
                "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode"]},
                "rayClusterSpec": RAY_CLUSTER_SPEC,
            },
            ("entrypoint", "rayClusterSpec"),
        ),
    ),
    ("ray.io/v1", "RayCluster"): _object("ray.io/v1", "RayCluster", RAY_CLUSTER_SPEC),
}
