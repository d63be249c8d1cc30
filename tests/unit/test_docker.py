"""docker/: the compose file and the Dockerfile, checked without a Docker engine.

Every container command is parsed with the real ``annal`` / ``annal-bench`` argument parsers,
so a renamed or removed flag fails here rather than in a container that restarts forever.
"""

from __future__ import annotations

import argparse
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DATA_DIR = "/var/lib/annal"


# ----------------------------------------------------------------------------- Dockerfile


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    args: str
    stage: int  # index of the FROM that opened the stage


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending.strip():
        logical.append(pending)
    out: list[Instruction] = []
    stage = -1
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, args.strip(), stage))
    return out


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT / CMD."""
    import json

    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((DOCKER / "Dockerfile").read_text())


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _build_args(instructions: list[Instruction]) -> dict[str, str]:
    """The defaults of the Dockerfile's ARGs (``ARG NAME=default``)."""
    return {
        i.args.split("=", 1)[0]: i.args.split("=", 1)[1]
        for i in instructions
        if i.keyword == "ARG" and "=" in i.args
    }


def _dependency_names() -> list[str]:
    meta = _pyproject()["project"]
    names = []
    for spec in meta["dependencies"]:
        names.append(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower())
    return names


def test_dockerfile_installs_from_package_metadata(dockerfile: list[Instruction]) -> None:
    installs = [i.args for i in dockerfile if i.keyword == "RUN" and "pip install" in i.args]
    assert installs, "the Dockerfile must pip install the project"
    project_installs = []
    for run in installs:
        for command in re.split(r"&&|;", run):
            words = shlex.split(command)
            if "pip" not in words or "install" not in words:
                continue
            targets = [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
            # No hand-kept dependency list: no requirements file and no named distributions,
            # only the project directory (pip itself may be upgraded).
            assert "-r" not in words and "--requirement" not in words, command
            extras = set(_pyproject()["project"].get("optional-dependencies", {}))
            for target in targets:
                project, _, extra = target.partition("[")
                assert project in (".", "/src", "./") or target == "pip", (
                    f"pip installs {target!r}: dependencies must come from pyproject.toml"
                )
                if extra:  # .[bench]: an extra the project declares
                    assert set(extra.rstrip("]").split(",")) <= extras, target
            if any(w.partition("[")[0] in (".", "./", "/src") for w in targets):
                project_installs.append(command)
    assert project_installs, "no `pip install .` of the project"
    lowered = " ".join(installs).lower()
    for name in _dependency_names():
        assert not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", lowered), (
            f"dependency {name} is named in the Dockerfile; it must come from pyproject.toml"
        )


def test_dockerfile_copies_every_package(dockerfile: list[Instruction]) -> None:
    """``pip install .`` in the image needs every package pyproject.toml includes."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # The folder of each top-level package of the `annal` namespace (annal/, broker/, ...).
    package_dir = pyproject["tool"]["setuptools"]["package-dir"]
    packages = {folder for name, folder in package_dir.items() if name.count(".") <= 1}
    copied: set[str] = set()
    for i in dockerfile:
        if i.keyword == "COPY" and not i.args.startswith("--from"):
            sources = i.args.split()[:-1]
            copied.update(s.strip("./") for s in sources)
    assert {"pyproject.toml", "README.md"} <= copied
    missing = packages - copied
    assert not missing, f"packages not copied into the image: {sorted(missing)}"
    # And the build context lets them through.
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for name in packages | {"pyproject.toml", "README.md"}:
        assert f"!{name}/" in ignore or f"!{name}" in ignore, f".dockerignore excludes {name}"


def test_dockerfile_runtime_stage(dockerfile: list[Instruction]) -> None:
    stage = final_stage(dockerfile)
    base = stage[0].args.split()[0]
    # The base is a build argument (docker/test.sh builds on a local Debian image), by default
    # python:3.11-slim; the build stage uses the same base, so its venv runs in the runtime.
    assert base == "${BASE_IMAGE}", base
    assert _build_args(dockerfile)["BASE_IMAGE"] == "python:3.11-slim"
    assert all(i.args.split()[0] == "${BASE_IMAGE}" for i in dockerfile if i.keyword == "FROM")

    users = [i.args for i in stage if i.keyword == "USER"]
    assert users, "the image must not run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]

    volumes = [v for i in stage if i.keyword == "VOLUME" for v in exec_form(i.args)]
    assert DATA_DIR in volumes

    entrypoints = [exec_form(i.args) for i in stage if i.keyword == "ENTRYPOINT"]
    assert entrypoints and entrypoints[-1] == ["annal"]


def test_dockerfile_default_command_parses(dockerfile: list[Instruction]) -> None:
    stage = final_stage(dockerfile)
    cmd = [exec_form(i.args) for i in stage if i.keyword == "CMD"][-1]
    args = _annal_parse(cmd)
    assert args.command == "broker"


def test_dockerfile_healthcheck_asks_the_broker(dockerfile: list[Instruction]) -> None:
    stage = final_stage(dockerfile)
    checks = [i.args for i in stage if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1, "exactly one HEALTHCHECK"
    _, _, command = checks[0].partition("CMD ")
    assert command, checks[0]
    # Expand the shell parameters the way sh would for a broker with ANNAL_PORT/ANNAL_BROKER_ID.
    env = {"ANNAL_PORT": "9094", "ANNAL_BROKER_ID": "2"}
    command = re.sub(r"\$\{ANNAL_PORT:-(\d+)\}", env["ANNAL_PORT"], command)
    command = re.sub(r"\$\{ANNAL_BROKER_ID:\+([^}]*)\}", lambda m: m.group(1), command)
    command = command.replace('"$ANNAL_BROKER_ID"', env["ANNAL_BROKER_ID"])
    command = command.split("||")[0]
    words = shlex.split(command)
    assert words[:2] == ["annal", "health"], words
    parsed = _annal_parse(words[1:])
    assert parsed.bootstrap_server == "127.0.0.1:9094"
    assert parsed.broker_id == 2


def test_dockerfile_installs_what_the_bench_service_needs(dockerfile: list[Instruction]) -> None:
    """The bench service writes a chart (--plot): the image installs the extra with matplotlib."""
    installs = " ".join(i.args for i in dockerfile if i.keyword == "RUN" and "pip install" in i.args)
    extras = re.findall(r"\.\[([\w,-]+)\]", installs)
    declared = _pyproject()["project"]["optional-dependencies"]
    installed = [dep for extra in extras for name in extra.split(",") for dep in declared[name]]
    assert any(dep.startswith("matplotlib") for dep in installed), extras


# ----------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _annal_parse(argv: list[str]) -> argparse.Namespace:
    """Parse ``annal ...`` (without the program name) with the real dispatcher's parser.

    ``annal.broker.cli._parser_for`` builds the parser exactly as ``annal`` does at run time (the
    named subcommand only), so this does not need every other subcommand importable.
    """
    from annal.broker import cli

    return _parse(cli._parser_for(argv), argv)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # argparse reports the error on stderr, then exits
        pytest.fail(f"not a valid command line ({exc.code}): {argv}")


def _argv(service: dict[str, Any]) -> list[str]:
    entrypoint = service.get("entrypoint", ["annal"])
    command = service.get("command", [])
    if isinstance(entrypoint, str):
        entrypoint = shlex.split(entrypoint)
    if isinstance(command, str):
        command = shlex.split(command)
    return [*entrypoint, *command]


def _bench_parse(argv: list[str]) -> argparse.Namespace:
    """Parse ``annal-bench TOOL ...`` with the tool's own parser (bench/cli.py dispatches)."""
    import importlib

    from annal.bench.cli import COMMANDS

    assert argv and argv[0] in COMMANDS, f"unknown annal-bench tool in {argv}"
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return _parse(module.build_parser(), argv[1:])


def _annal_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if str(s.get("image", "")).split(":")[0] == "annal"}


def _brokers(compose: dict[str, Any]) -> dict[str, argparse.Namespace]:
    out = {}
    for name, service in _annal_services(compose).items():
        argv = _argv(service)
        if argv[0] == "annal" and argv[1:2] == ["broker"]:
            out[name] = _annal_parse(argv[1:])
    return out


def test_every_annal_command_parses(compose: dict[str, Any]) -> None:
    services = _annal_services(compose)
    assert services
    for name, service in services.items():
        argv = _argv(service)
        if argv[0] == "annal":
            _annal_parse(argv[1:])
        elif argv[0] == "annal-bench":
            _bench_parse(argv[1:])
        else:
            pytest.fail(f"service {name} runs {argv[0]!r}, neither annal nor annal-bench")


def test_brokers_are_distinct(compose: dict[str, Any]) -> None:
    _check_brokers(compose)


def test_readme_fourth_broker_fits(compose: dict[str, Any]) -> None:
    """The broker-4 block docker/README.md tells users to add keeps the cluster valid."""
    readme = (DOCKER / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)
    snippet = next(b for b in blocks if "broker-4:" in b)
    text = (DOCKER / "compose.yaml").read_text()
    text = text.replace("\n  bench:\n", "\n" + snippet + "\n  bench:\n", 1)
    text = text.rstrip() + "\n  broker-4-data:\n"
    extended = yaml.safe_load(text)
    assert "broker-4" in extended["services"]
    assert len(_check_brokers(extended)) == 4


def _check_brokers(compose: dict[str, Any]) -> dict[str, argparse.Namespace]:
    brokers = _brokers(compose)
    assert len(brokers) >= 3, sorted(brokers)
    services = compose["services"]
    ids, hosts, endpoints, volumes = set(), set(), set(), set()
    for name, args in brokers.items():
        service = services[name]
        ids.add(args.broker_id)
        hosts.add(args.advertised_host)
        # The advertised name must resolve in the network: it is the service's name/hostname.
        assert args.advertised_host in (name, service.get("hostname")), name
        assert args.zookeeper and args.zookeeper.split(",")[0].split(":")[0] == "zookeeper"
        assert not getattr(args, "standalone", False)
        assert args.data_dir == DATA_DIR
        endpoints.add((args.port, args.fetch_port, args.metrics_port))
        mounts = [v for v in service.get("volumes", []) if v.split(":")[1] == DATA_DIR]
        assert len(mounts) == 1, f"{name} has no volume on {DATA_DIR}"
        volume = mounts[0].split(":")[0]
        assert volume in compose["volumes"], f"{name}: volume {volume} not declared"
        volumes.add(volume)
        # The health check finds the broker's port and id in its environment.
        env = service.get("environment", {})
        assert int(env["ANNAL_BROKER_ID"]) == args.broker_id
        assert int(env.get("ANNAL_PORT", 9092)) == args.port
        # Ports are published as-is, so the advertised host:port also works from the host.
        published = {str(p) for p in service.get("ports", [])}
        for port in (args.port, args.fetch_port, args.metrics_port):
            assert f"{port}:{port}" in published, f"{name}: port {port} not published as-is"
        assert service["depends_on"]["zookeeper"]["condition"] == "service_healthy"
    n = len(brokers)
    assert len(ids) == n, "broker ids must be distinct"
    assert len(hosts) == n, "advertised hosts must be distinct"
    assert len(volumes) == n, "each broker needs its own volume"
    # Distinct ports: inside one container the three must differ, and published on one host
    # they must differ across brokers too.
    assert len({p for e in endpoints for p in e}) == 3 * n, endpoints
    return brokers


def test_zookeeper_service(compose: dict[str, Any]) -> None:
    """ZooKeeper is built here (docker/zookeeper/) from Debian's package: its config, volumes,
    port and health check agree with each other and with the brokers' connect string."""
    zk = compose["services"]["zookeeper"]
    assert zk["image"].split(":")[0] == "annal-zookeeper"
    context = DOCKER / zk["build"]["context"]
    instructions = parse_dockerfile((context / "Dockerfile").read_text())
    cfg = dict(
        line.split("=", 1)
        for line in (context / "zoo.cfg").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert cfg["clientPort"] == "2181"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in zk["volumes"]}
    for key in ("dataDir", "dataLogDir"):
        assert cfg[key] in mounts, f"{key}={cfg[key]} is not on a volume"
        assert mounts[cfg[key]] in compose["volumes"]
    volumes = [v for i in instructions if i.keyword == "VOLUME" for v in exec_form(i.args)]
    assert {cfg["dataDir"], cfg["dataLogDir"]} <= set(volumes)
    assert [i for i in instructions if i.keyword == "COPY" and "zoo.cfg" in i.args]
    checks = [i.args for i in instructions if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    test = exec_form(checks[0].partition("CMD ")[2])
    words = re.findall(r"printf (\w+)", " ".join(test))
    assert words and f"/{cfg['clientPort']}" in " ".join(test), test
    whitelist = cfg["4lw.commands.whitelist"].split(",")
    assert set(words) <= set(whitelist), (words, whitelist)
    for args in _brokers(compose).values():
        assert args.zookeeper.split("/")[0] == f"zookeeper:{cfg['clientPort']}"


def test_test_script_matches_the_compose_file(compose: dict[str, Any]) -> None:
    """docker/test.sh checks the ports the compose file publishes and produces through the
    brokers' advertised addresses."""
    script = (DOCKER / "test.sh").read_text()
    published = {
        str(p).split(":")[0] for s in compose["services"].values() for p in s.get("ports", [])
    }
    checked = set(re.search(r"for port in ([\d ]+); do", script).group(1).split())
    assert published == checked
    bootstrap = re.search(r'BOOTSTRAP="([^"]+)"', script).group(1)
    advertised = {f"{a.advertised_host}:{a.port}" for a in _brokers(compose).values()}
    assert set(bootstrap.split(",")) == advertised


def test_bench_targets_the_brokers(compose: dict[str, Any]) -> None:
    bench = compose["services"]["bench"]
    argv = _argv(bench)
    assert argv[0] == "annal-bench"
    args = _bench_parse(argv[1:])
    brokers = _brokers(compose)
    advertised = {f"{a.advertised_host}:{a.port}" for a in brokers.values()}
    servers = set(args.bootstrap_servers.split(","))
    assert servers and servers <= advertised, (servers, advertised)
    for name in brokers:
        assert bench["depends_on"][name]["condition"] == "service_healthy"
    # Its results are written where a volume keeps them.
    mounts = [v.split(":")[1] for v in bench.get("volumes", [])]
    for path in (args.json_path, args.plot_path):
        assert path and any(path.startswith(m + "/") for m in mounts), (path, mounts)
