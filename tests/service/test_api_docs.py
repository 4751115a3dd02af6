"""The OpenAPI description: served, copied into docs/, and covering every route."""

from __future__ import annotations

import json
from pathlib import Path

from sealgrid.service.openapi import OPENAPI, main

DOCS = Path(__file__).resolve().parents[2] / "docs"
REGENERATE = "python -m sealgrid.service.openapi docs/openapi.json"


def test_docs_copy_is_current() -> None:
    assert json.loads((DOCS / "openapi.json").read_text()) == json.loads(json.dumps(OPENAPI)), (
        f"docs/openapi.json is not the served document: run {REGENERATE}")


def test_the_regenerating_command_writes_the_committed_copy(tmp_path) -> None:
    assert main([str(tmp_path / "openapi.json")]) == 0
    assert (tmp_path / "openapi.json").read_text() == (DOCS / "openapi.json").read_text(), (
        f"docs/openapi.json is not as {REGENERATE} writes it")
    assert main(["--no-such-option"]) == 2


def test_every_route_is_described_and_documented(tmp_path) -> None:
    from sealgrid.service.api import build_app
    from sealgrid.service.config import load_server_config
    from sealgrid.service.server import Server
    from sealgrid.service.setup import init_data_dir

    init_data_dir(tmp_path / "d", households=1, base_port=40000)
    server = Server(load_server_config(tmp_path / "d" / "server-0" / "server.toml"))
    try:
        app = build_app(server)
        routes = {
            (r.method.lower(), r.resource.canonical)
            for r in app.router.routes()
            if r.method != "HEAD" and r.resource is not None
        }
    finally:
        server.store.close()
    described = {(m, p) for p, ops in OPENAPI["paths"].items() for m in ops}
    assert routes == described
    api_md = (DOCS / "api.md").read_text()
    for _, path in described:
        assert f"`{path}`" in api_md or path in api_md, path
