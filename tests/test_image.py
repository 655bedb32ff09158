"""deploy/image/Dockerfile, read offline (no container engine here, so the image is not
built in the suite): a Python 3.11 slim base, the whole project installed, a non-root
user, ``livemesh`` as the entry point with ``livemesh health`` as its HEALTHCHECK, and no
secret baked in."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "image" / "Dockerfile"
SECRETISH = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|REDIS_URL", re.IGNORECASE)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_every_stage_is_python_3_11_slim() -> None:
    bases = [args for word, args in instructions(DOCKERFILE.read_text()) if word == "FROM"]
    assert bases and all(re.match(r"python:3\.11-slim", b) for b in bases), bases


def test_the_process_runs_as_a_non_root_user() -> None:
    users = [args for word, args in final_stage(instructions(DOCKERFILE.read_text()))
             if word == "USER"]  # fmt: skip
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and int(user) >= 1000  # matches runAsUser in deploy/k8s
    assert "runAsUser: 10001" in (ROOT / "deploy/k8s/base/data/edge.yaml").read_text()


def test_livemesh_is_the_entry_point_and_checks_its_own_health() -> None:
    steps = dict(final_stage(instructions(DOCKERFILE.read_text())))
    assert json.loads(steps["ENTRYPOINT"]) == ["livemesh"]
    health = steps["HEALTHCHECK"]
    command = json.loads(health[health.index("CMD") + 3 :].strip())
    assert command[:2] == ["livemesh", "health"]


def test_no_secret_is_baked_in() -> None:
    for word, args in instructions(DOCKERFILE.read_text()):
        if word in ("ENV", "ARG", "LABEL"):
            assert not SECRETISH.search(args), (word, args)
        if word in ("COPY", "ADD"):
            assert not re.search(r"\.env\b|secret|\.pem|\.key\b", args, re.IGNORECASE), args


def test_every_package_of_the_project_is_copied_in() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {
        args.split()[0]
        for word, args in instructions(DOCKERFILE.read_text())
        if word == "COPY" and not args.startswith("--")
    }
    assert wanted <= copied, wanted - copied
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text()
    assert all(f"!{p}/" in ignore for p in wanted)
