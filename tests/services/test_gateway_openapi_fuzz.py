"""schemathesis against a running gateway: requests generated from the served
``/openapi.json`` (valid and invalid ones), sent with a signed-in viewer's token; no answer
may be a server error, and every answer must be one the document describes."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.services import test_gateway
from tests.services.test_gateway import Stack, put_demo_on_air

stack = test_gateway.stack  # the running stack of test_gateway, for this test too

# Real names, half the time, so that generated requests reach past "not found" into the
# services (the demo title and channel on air, the viewer's profile "main").
CONFIG = """
[dictionaries]
titles = { values = ["demo", "premiere-night"] }
channels = { values = ["demo"] }
profiles = { values = ["main"] }
contents = { values = ["titles/demo", "channels/demo", "titles/premiere-night"] }

[parameters]
"path.title" = { dictionary = "titles", probability = 0.5 }
"path.channel" = { dictionary = "channels", probability = 0.5 }
"path.profile" = { dictionary = "profiles", probability = 0.5 }
"body.content" = { dictionary = "contents", probability = 0.5 }
"""
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)


async def test_generated_requests_get_no_server_error_and_documented_answers(
    stack: Stack, tmp_path: Path
) -> None:
    status, up = await stack.call(
        "POST",
        "/v1/accounts:signUp",
        {"email": "fuzz@example.org", "password": "correct horse battery"},
    )
    assert status == 200, up
    token = up["accessToken"]
    await put_demo_on_air(stack.state)
    status, made = await stack.call(
        "POST", "/v1/profiles", {"profileId": "main", "profile": {"displayName": "Main"}}, token
    )
    assert status == 200, made
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{stack.gateway}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--header",
        f"Authorization: Bearer {token}",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "15",
        "--seed",
        "20261207",
        "--workers",
        "1",
        "--request-timeout",
        "5",
        "--suppress-health-check",
        "all",
    ]
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=tmp_path,  # its hypothesis database and reports, away from the tree
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "120"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(120):
        output, _ = await process.communicate()
    report = output.decode(errors="replace")
    assert process.returncode == 0, report[-6000:]
