"""deploy/: every YAML valid against its schema (`k8s_schemas`: Kubernetes' own schemas cannot be
downloaded here), and the examples able to work as written: the image they run is the one
deploy/Dockerfile builds from this repository, the config they read is mounted from the
ConfigMap in deploy/ and is a valid convert config."""

from __future__ import annotations

import copy
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from k8s_schemas import SCHEMAS

from condlabel.config import load_config

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"


def _documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def _by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in _documents() if doc["kind"] == kind]


def _pod_specs(doc: dict) -> list[dict]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    cluster = spec["rayClusterSpec"] if doc["kind"] == "RayJob" else spec
    groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    return [group["template"]["spec"] for group in groups]


@pytest.mark.parametrize(
    "name,doc", _documents(), ids=[f"{n}:{d['kind']}" for n, d in _documents()]
)
def test_every_deploy_yaml_matches_its_schema(name, doc):
    schema = SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
    assert schema is not None, f"{name}: no schema for {doc.get('apiVersion')} {doc.get('kind')}"
    jsonschema.validate(doc, schema)


def test_the_schemas_are_not_vacuous():
    [job] = _by_kind("CronJob")
    broken = copy.deepcopy(job)
    broken["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMAS[("batch/v1", "CronJob")])
    [rayjob] = _by_kind("RayJob")
    broken = copy.deepcopy(rayjob)
    broken["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volume"] = []
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMAS[("ray.io/v1", "RayJob")])


def test_every_pod_runs_the_image_the_dockerfile_builds():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-py311-gpu" in dockerfile
    assert re.search(r'pip install [^\n]*"/app\[', dockerfile)  # from this repository
    images = {
        container["image"]
        for _, doc in _documents()
        if doc["kind"] != "ConfigMap"
        for pod in _pod_specs(doc)
        for container in pod["containers"]
    }
    assert images == {"ghcr.io/example/condlabel:0.1.0-gpu"}
    for doc in _by_kind("RayJob") + _by_kind("RayCluster"):
        cluster = doc["spec"].get("rayClusterSpec", doc["spec"])
        assert cluster["rayVersion"] == ray.__version__


def _config_map_files() -> dict[tuple[str, str], str]:
    return {
        (doc["metadata"]["name"], key): text
        for doc in _by_kind("ConfigMap")
        for key, text in doc["data"].items()
    }


def _mounted_file(pod: dict, container: dict, path: str) -> str:
    """The ConfigMap file a path in a container reads (mount path + key), or fail."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        prefix = mount["mountPath"].rstrip("/") + "/"
        if "configMap" in volume and path.startswith(prefix):
            key = (volume["configMap"]["name"], path[len(prefix) :])
            assert key in _config_map_files(), f"{path}: no such key in deploy/'s ConfigMaps"
            return _config_map_files()[key]
    raise AssertionError(f"{path}: not mounted from a ConfigMap")


def test_every_volume_refers_to_what_exists():
    names = {doc["metadata"]["name"] for doc in _by_kind("ConfigMap")}
    for _, doc in _documents():
        if doc["kind"] == "ConfigMap":
            continue
        for pod in _pod_specs(doc):
            for volume in pod.get("volumes", []):
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in names
            mounts = {m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in pod.get("volumes", [])}


def test_the_config_the_examples_read_is_mounted_and_valid(tmp_path):
    [rayjob] = _by_kind("RayJob")
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:2] == ["python", "ray_jobs/convert_corpus.py"] and (REPO / argv[1]).is_file()
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    config = _mounted_file(head, head["containers"][0], argv[argv.index("--config") + 1])
    [cronjob] = _by_kind("CronJob")
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [submit] = pod["containers"]
    script = " ".join(submit["args"])
    copied = re.search(r"cp -L (\S+) (\S+)", script)
    assert copied and _mounted_file(pod, submit, copied.group(1)) == config
    job = shlex.split(script.split("ray job submit", 1)[1])
    assert job[job.index("--working-dir") + 1] == copied.group(2).rstrip("/")
    entry = job[job.index("--") + 1 :]
    assert entry[:4] == ["python", "-m", "condlabel.cli", "convert"]
    assert entry[entry.index("--config") + 1] == Path(copied.group(1)).name
    path = tmp_path / "convert.yaml"
    path.write_text(config)
    cfg = load_config("convert", path)
    assert cfg.input.paths and cfg.output.uri.startswith("s3://")


def test_the_readme_installs_nothing_that_is_not_published():
    readme = (REPO / "README.md").read_text()
    assert "pip install 'condlabel==" not in readme and "condlabel==0.1.0" not in readme


def test_the_makefile_can_take_torch_from_the_cpu_index(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("no make here")
    makefile = (REPO / "Makefile").read_text()
    assert "never pulls" not in makefile  # the public index's Linux torch is the CUDA build
    venv = tmp_path / "venv"  # `make -n` prints the commands, runs none
    base = ["make", "-n", "-B", f"{venv}/.dev", f"VENV={venv}"]
    index = "https://download.pytorch.org/whl/cpu"
    given = subprocess.run([*base, f"TORCH_INDEX_URL={index}"], cwd=REPO, capture_output=True)
    plain = subprocess.run(base, cwd=REPO, capture_output=True)
    torch_line = [line for line in given.stdout.decode().splitlines() if '"torch==' in line]
    assert torch_line and f"--index-url {index}" in torch_line[0]
    assert "--index-url" not in plain.stdout.decode()
