"""The Dockerfile builds what the repository holds and runs the server the manifests expect.

No Docker engine exists here, so these checks cover what a build would trip over first (a COPY source missing
or excluded from the context) and what would be wrong at run time (ports, health path, user, entry point).
"""

from __future__ import annotations

import subprocess
import tomllib

from server.settings import Settings
from tests.deploy.dockerfile import DockerIgnore, Instruction, instructions
from tests.deploy.manifests import ROOT, Doc, MakeSettings, find, server_container

DOCKERFILE = ROOT / "Dockerfile"


def all_instructions() -> list[Instruction]:
    return instructions(DOCKERFILE)


def final_stage() -> list[Instruction]:
    items = all_instructions()
    last_from = max(i for i, ins in enumerate(items) if ins.keyword == "FROM")
    return items[last_from:]


def one(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"{keyword}: {found}"
    return found[0]


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def test_dockerignore_reader_follows_docker_rules() -> None:
    rules = DockerIgnore.read(ROOT / ".dockerignore")
    assert rules.excluded(".venv/bin/python") and rules.excluded("tests/deploy/test_dockerfile.py")
    assert not rules.excluded("server/cli.py") and not rules.excluded("pyproject.toml")
    assert rules.excluded("server/__pycache__/cli.cpython-311.pyc") and rules.excluded("__pycache__/x.pyc")


def test_every_copy_source_is_tracked_and_in_the_build_context() -> None:
    ignore = DockerIgnore.read(ROOT / ".dockerignore")
    files = tracked_files()
    copies = [i for i in all_instructions() if i.keyword == "COPY" and "--from=" not in i.arguments]
    assert copies
    for copy in copies:
        *sources, _destination = [a for a in copy.exec_form() if not a.startswith("--")]
        for source in sources:
            source = source.rstrip("/")
            under = [f for f in files if f == source or f.startswith(source + "/")]
            assert under, f"COPY {source}: nothing tracked by git there (a fresh clone would fail the build)"
            excluded = [f for f in under if ignore.excluded(f)]
            assert excluded == [], f"COPY {source}: excluded by .dockerignore: {excluded[:5]}"


def test_variants_are_stages_chosen_by_the_build_argument() -> None:
    items = all_instructions()
    stages = {i.arguments.split()[-1] for i in items if i.keyword == "FROM" and " AS " in i.arguments.upper()}
    assert {"build-native", "build-cpu", "runtime-cpu", "build-gpu", "runtime-gpu", "final"} <= stages
    assert any(i.keyword == "ARG" and i.arguments == "VARIANT=cpu" for i in items)
    assert one(final_stage(), "FROM").arguments == "runtime-${VARIANT} AS final"
    runs = " ".join(i.arguments for i in items if i.keyword == "RUN")
    assert "-c constraints-cpu.txt" in runs, "CPU install pins torch like the README's"
    assert "grep -v '^torch=='" in runs and "--system-site-packages" in runs, "GPU keeps the base image's torch"


def test_ports_health_and_entrypoint_are_the_servers(effective_settings: MakeSettings) -> None:
    stage = final_stage()
    env = dict(item.split("=", 1) for i in stage if i.keyword == "ENV" for item in i.exec_form())
    twofour = {k: v for k, v in env.items() if k.startswith("TWOFOUR_")}
    assert set(twofour) <= {f"TWOFOUR_{n.upper()}" for n in Settings.model_fields}
    command = one(stage, "ENTRYPOINT").exec_form() + one(stage, "CMD").exec_form()
    assert command[:2] == ["twofour", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["twofour"] == "server.cli:main"
    settings = effective_settings(twofour, command[2:])
    assert str(settings.model_repository) == "/models"
    exposed = sorted(int(p) for p in one(stage, "EXPOSE").exec_form())
    assert exposed == sorted(settings.enabled_listeners().values()) == [8000, 8001, 8002]
    health = one(stage, "HEALTHCHECK").arguments
    assert "/v2/health/ready" in health and "TWOFOUR_HTTP_PORT" in health


def test_runs_as_the_non_root_user_the_manifests_declare(rendered: dict[str, list[Doc]]) -> None:
    user = one(final_stage(), "USER").arguments
    uid, gid = (int(x) for x in user.split(":"))
    assert uid != 0 and gid != 0
    for docs in rendered.values():
        pod = find(docs, "Deployment", "twofour")["spec"]["template"]["spec"]
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)
        assert server_container(docs)["image"].startswith("twofour:")


def test_the_cpu_image_gets_the_native_grpc_front_on_path() -> None:
    """`--grpc-frontend auto` finds `twofour-grpc-front` on PATH; the runtime stage needs gRPC's libraries for it."""
    items = all_instructions()
    copies = [i.arguments for i in items if i.keyword == "COPY" and "--from=build-native" in i.arguments]
    assert copies == ["--from=build-native /src/native/build/twofour-grpc-front /usr/local/bin/twofour-grpc-front"]
    runs = " ".join(i.arguments for i in items if i.keyword == "RUN")
    assert "libgrpc++-dev" in runs and "libgrpc++1.51" in runs and "bash build.sh" in runs


def stage_of(name: str) -> list[Instruction]:
    items = all_instructions()
    starts = [i for i, ins in enumerate(items) if ins.keyword == "FROM"]
    for start, end in zip(starts, [*starts[1:], len(items)], strict=True):
        if items[start].arguments.endswith(f" AS {name}"):
            return items[start:end]
    raise AssertionError(f"no stage {name}")


def test_the_cpu_install_takes_the_builders_pip_configuration_or_the_cpu_index() -> None:
    """A builder's own pip sources (make image-check: deploy/pip_sources.py) arrive as the build secret pip.conf,
    mounted for the install alone; without it the install adds PyTorch's CPU index, as the README's does."""
    installs = [i.arguments for i in stage_of("build-cpu") if i.keyword == "RUN" and "pip install" in i.arguments]
    assert len(installs) == 1
    install = installs[0]
    assert install.startswith("--mount=type=secret,id=pip.conf --mount=type=secret,id=pip-cert ")
    assert "export PIP_CONFIG_FILE=/run/secrets/pip.conf" in install
    assert 'else export PIP_EXTRA_INDEX_URL="${TORCH_INDEX_URL}"' in install
    assert any(i.keyword == "ARG" and i.arguments == "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu"
               for i in stage_of("build-cpu"))
    mounting = [i for i in all_instructions() if i.keyword == "RUN" and "--mount=" in i.arguments]
    assert mounting == [i for i in stage_of("build-cpu") if i.keyword == "RUN" and "--mount=" in i.arguments]


def test_make_image_check_runs_the_deploy_script() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nimage-check:", 1)[1].split("\n\n", 1)[0]
    assert "bash deploy/image_check.sh" in recipe and (ROOT / "deploy" / "image_check.sh").is_file()
