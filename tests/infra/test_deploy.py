"""Deployment assets (infra/deploy/, .dockerignore; docs/deployment.md): what can be checked without an image
registry or a Kubernetes cluster. The Dockerfiles install what the Makefile installs, in the same order and
with the same pip flags; every KubeRay manifest has the fields KubeRay needs; every RayJob entrypoint is a
`videopoet` command line the CLI's own parser accepts, joining the cluster (`--ray-address auto`)."""

from __future__ import annotations

import argparse
import fnmatch
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from videopoet import cli, commands

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "infra" / "deploy" / "docker"
KUBERAY = REPO / "infra" / "deploy" / "kuberay"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))
RAYJOBS = sorted(KUBERAY.glob("rayjob-*.yaml"))
RAY_VERSION = "2.60.0"
# every job of the pipeline has a RayJob (eval: pending until the command exists)
JOBS = {"ingest", "tokenize", "train-tokenizer", "train", "eval"}


# --- Dockerfiles == Makefile -------------------------------------------------------------------------

def _pip_commands(shell: str) -> list[list[str]]:
    """The `pip install`/`pip wheel` invocations of a shell line, as argument lists after `pip`."""
    lexer = shlex.shlex(shell, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    parts, found = [[]], []
    for token in lexer:
        if token in ("&&", "||", ";", "|"):
            parts.append([])
        else:
            parts[-1].append(token)
    for words in parts:
        for i, word in enumerate(words):
            if word == "pip" and i + 1 < len(words) and words[i + 1] in ("install", "wheel"):
                found.append(words[i + 1:])
                break
    return found


def _step(args: list[str], project_targets: tuple[str, ...]) -> tuple[str, frozenset[str]]:
    """("lock", flags) for `install -r requirements.lock`; ("project", flags) for the project; flags = the
    `--` options (without their values: --wheel-dir DIR counts as --wheel-dir)."""
    verb, rest = args[0], args[1:]
    flags, positional, i = set(), [], 0
    while i < len(rest):
        a = rest[i]
        if a in ("-r", "--requirement"):
            positional.append(("-r", rest[i + 1]))
            i += 2
            continue
        if a in ("--wheel-dir", "-w"):
            flags.add("--wheel-dir")
            i += 2
            continue
        if a == "-e":
            positional.append(("-e", rest[i + 1]))
            i += 2
            continue
        if a.startswith("--"):
            flags.add(a.split("=", 1)[0])
        elif a.startswith("-"):
            flags.add(a)
        else:
            positional.append(("", a))
        i += 1
    (kind, target), = positional  # one thing installed per pip line
    if kind == "-r":
        assert Path(target).name == "requirements.lock", f"pip -r {target}: only requirements.lock is installed"
        return "lock", frozenset(flags)
    assert kind == "-e" or any(fnmatch.fnmatch(target, p) for p in project_targets), \
        f"pip {verb} {target}: neither requirements.lock nor the project"
    return "project", frozenset(flags | ({"--wheel"} if verb == "wheel" else set()))


def makefile_steps(text: str) -> list[tuple[str, frozenset[str]]]:
    """The pip steps of the Makefile's `$(STAMP):` recipe (the install `make demo`/`make test` run)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("$(STAMP):"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip().lstrip("@"))
    steps = [_step(args, (".",)) for line in recipe for args in _pip_commands(line.replace("$(PY)", "python"))]
    assert steps, "no pip line in the Makefile's $(STAMP) recipe"
    return steps


def dockerfile_runs(text: str) -> list[str]:
    """The RUN instructions of every stage, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    return [line.strip()[4:] for line in joined.splitlines() if line.strip().startswith("RUN ")]


def dockerfile_steps(text: str) -> list[tuple[str, frozenset[str]]]:
    """The Dockerfile's pip steps; `pip wheel` of the checkout + `pip install` of that wheel = one project step."""
    raw = [_step(args, ("/*src*", "*/videopoet-*.whl", "."))
           for run in dockerfile_runs(text) for args in _pip_commands(run)]
    steps: list[tuple[str, frozenset[str]]] = []
    for kind, flags in raw:
        if steps and kind == "project" and steps[-1][0] == "project" and "--wheel" in steps[-1][1]:
            steps[-1] = ("project", steps[-1][1] | flags)  # the wheel built, then installed
        else:
            steps.append((kind, flags))
    return steps


def check_dockerfile_matches_makefile(dockerfile: str, makefile: str) -> None:
    make, docker = makefile_steps(makefile), dockerfile_steps(dockerfile)
    assert [k for k, _ in docker] == [k for k, _ in make] == ["lock", "project"], \
        f"install steps: Dockerfile {[k for k, _ in docker]}, Makefile {[k for k, _ in make]}"
    for (kind, make_flags), (_, docker_flags) in zip(make, docker):
        missing = make_flags - docker_flags
        assert not missing, f"{kind} step: the Dockerfile lacks the Makefile's pip flags {sorted(missing)}"
    # the wheel is installed with --no-deps itself (pip would otherwise resolve and move the lock's pins)
    installs = [args for run in dockerfile_runs(dockerfile) for args in _pip_commands(run) if args[0] == "install"]
    assert "--no-deps" in installs[-1], "the project's wheel must be installed with --no-deps"
    assert re.search(r"^COPY\b.*\brequirements\.lock\b", dockerfile, re.M), "requirements.lock is not copied in"


def test_there_are_a_cpu_and_a_cuda_dockerfile():
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.cpu", "Dockerfile.cuda"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_what_the_makefile_installs(dockerfile):
    check_dockerfile_matches_makefile(dockerfile.read_text(), (REPO / "Makefile").read_text())


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_base_is_rays_image_of_the_pinned_versions(dockerfile):
    text = dockerfile.read_text()
    lock = (REPO / "requirements.lock").read_text()
    assert f"\nray=={RAY_VERSION}\n" in lock
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11,<3.12"
    (base,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    flavour = "cpu" if dockerfile.name.endswith(".cpu") else "gpu"
    assert base == f"rayproject/ray:{RAY_VERSION}-py311-{flavour}"
    assert re.search(r"^FROM \$\{BASE_IMAGE\}", text, re.M)
    beam = re.search(r"^apache-beam==(\S+)$", lock, re.M).group(1)
    assert f"ARG BEAM_SDK_IMAGE=apache/beam_python3.11_sdk:{beam}\n" in text  # the SDK harness of the pinned Beam


def test_cpu_and_cuda_dockerfiles_differ_only_in_base_and_comments():
    def body(path: Path) -> list[str]:
        return [line for line in path.read_text().splitlines()
                if line.strip() and not line.startswith("#") and not line.startswith("ARG BASE_IMAGE=")]

    assert body(DOCKER / "Dockerfile.cpu") == body(DOCKER / "Dockerfile.cuda")


def test_the_check_fails_when_a_dockerfile_drops_a_makefile_step():
    makefile = (REPO / "Makefile").read_text()
    good = (DOCKER / "Dockerfile.cpu").read_text()
    check_dockerfile_matches_makefile(good, makefile)
    no_lock = re.sub(r"^RUN python -m pip install .*-r .*requirements\.lock\n", "", good, flags=re.M)
    deps = good.replace("--no-deps /tmp/videopoet/dist", "/tmp/videopoet/dist")
    no_isolation = good.replace("--no-build-isolation", "")
    for broken in (no_lock, deps, no_isolation):
        assert broken != good
        with pytest.raises(AssertionError):
            check_dockerfile_matches_makefile(broken, makefile)


def test_dockerignore_keeps_what_the_wheel_is_built_from():
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    needed = ["requirements.lock", "pyproject.toml", "README.md"]
    needed += list(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    for path in needed:
        assert (REPO / path).exists()
        assert not any(fnmatch.fnmatch(path, p) for p in patterns), f".dockerignore excludes {path}"
    for heavy in (".git", ".venv", "demo_out", "build"):
        assert heavy in patterns, f".dockerignore should exclude {heavy}"


# --- KubeRay manifests -------------------------------------------------------------------------------

def _load(path: Path) -> dict:
    (doc,) = list(yaml.safe_load_all(path.read_text()))
    return doc


def _pod_templates(cluster_spec: dict) -> list[tuple[str, dict]]:
    groups = [("head", cluster_spec["headGroupSpec"])]
    groups += [(g["groupName"], g) for g in cluster_spec.get("workerGroupSpecs") or []]
    return [(name, g["template"]["spec"]) for name, g in groups]


def check_cluster_spec(spec: dict, *, fixed_size: bool) -> None:
    assert spec["rayVersion"] == RAY_VERSION
    head = spec["headGroupSpec"]
    assert "rayStartParams" in head and head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    groups = spec.get("workerGroupSpecs") or []
    assert groups, "no worker group"
    for g in groups:
        assert {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"} <= set(g)
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        if fixed_size:  # RayJob clusters: a fixed size (what Kueue's gang admission counts)
            assert g["minReplicas"] == g["replicas"] == g["maxReplicas"] >= 1
    for name, pod in _pod_templates(spec):
        (container,) = pod["containers"]
        gpus = container["resources"]["limits"].get("nvidia.com/gpu")
        if name.startswith("gpu"):
            assert gpus and int(gpus) >= 1, f"{name}: the GPU group must request nvidia.com/gpu"
            assert container["resources"]["requests"]["nvidia.com/gpu"] == gpus
            assert container["image"].endswith("-cuda"), f"{name}: GPU pods run the CUDA image"
            assert any(t["key"] == "nvidia.com/gpu" for t in pod.get("tolerations", []))
        else:
            assert gpus is None and container["image"].endswith("-cpu"), f"{name}: CPU pods run the CPU image"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts.get("shared") == "/shared" and mounts.get("dshm") == "/dev/shm", name
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["shared"]["persistentVolumeClaim"]["claimName"] == "videopoet-shared"
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"


def test_shared_volume_claim():
    pvc = _load(KUBERAY / "pvc.yaml")
    assert (pvc["apiVersion"], pvc["kind"], pvc["metadata"]["name"]) == ("v1", "PersistentVolumeClaim",
                                                                         "videopoet-shared")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] and pvc["spec"]["resources"]["requests"]["storage"]


def test_raycluster_has_head_cpu_and_gpu_groups_on_shared_storage():
    rc = _load(KUBERAY / "raycluster.yaml")
    assert (rc["apiVersion"], rc["kind"]) == ("ray.io/v1", "RayCluster") and rc["metadata"]["name"]
    check_cluster_spec(rc["spec"], fixed_size=False)
    assert {g["groupName"] for g in rc["spec"]["workerGroupSpecs"]} == {"cpu-workers", "gpu-workers"}


def command_names() -> set[str]:
    (sub,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def entrypoint_argv(job: dict) -> list[str]:
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "videopoet", "the entrypoint is the videopoet command (the image's console script)"
    return argv[1:]


def test_a_rayjob_for_every_job():
    commands_in_manifests = {entrypoint_argv(_load(p))[0] for p in RAYJOBS}
    assert commands_in_manifests == JOBS


@pytest.mark.parametrize("path", RAYJOBS, ids=lambda p: p.stem)
def test_rayjob_structure(path):
    job = _load(path)
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["metadata"]["name"] == "videopoet-" + path.stem.removeprefix("rayjob-")
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])  # a YAML string, parsed by Ray
    assert runtime_env["env_vars"]["MLFLOW_TRACKING_URI"].startswith("sqlite:////shared/")
    assert "clusterSelector" not in spec  # each RayJob brings its own cluster (shut down when it ends)
    check_cluster_spec(spec["rayClusterSpec"], fixed_size=True)


@pytest.mark.parametrize("path", RAYJOBS, ids=lambda p: p.stem)
def test_rayjob_entrypoint_is_a_valid_videopoet_command_on_the_cluster(path):
    job = _load(path)
    argv = entrypoint_argv(job)
    if argv[0] not in command_names():
        assert argv[0] == "eval" and "PENDING" in path.read_text(), f"unknown command {argv[0]!r}"
        pytest.skip("`videopoet eval` does not exist yet: parsed once the command lands")
    args = commands.parse(cli.build_parser(), argv)  # argparse exits (SystemExit) on a bad command line
    groups = {g["groupName"]: g for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
    if hasattr(args, "ray_address"):
        if getattr(args, "engine", None) == "beam":  # a Beam-engine job names its runner instead
            assert "--runner" in (args.beam_options or ""), "a Beam job on a cluster names its runner"
        else:
            assert args.ray_address == "auto", "a job on the RayCluster joins it: --ray-address auto"
            if hasattr(args, "beam_options"):  # a data job: the Ray engine
                assert args.engine == "ray"
    else:
        # No --ray-address (train-tokenizer today): Ray's job supervisor sets RAY_ADDRESS for the entrypoint,
        # and the job trains on GPU only when its driver sees CUDA: the driver reserves a GPU.
        assert job["spec"]["entrypointNumGpus"] >= 1 and "gpu-workers" in groups
    if getattr(args, "use_gpu", False):
        assert "gpu-workers" in groups, "--use-gpu needs the GPU group"
    config = getattr(args, "config", None)
    if config and config.endswith(".yaml"):
        assert (REPO / config).is_file(), f"--config {config}: not a packaged config"


def test_train_rayjob_has_the_gang_scheduling_note():
    text = (KUBERAY / "rayjob-train.yaml").read_text()
    assert "kueue.x-k8s.io/queue-name" in text and "Gang scheduling" in text
