"""The man pages in man/ are generated from the Typer app and the store schema: no drift."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _gen_man():
    spec = importlib.util.spec_from_file_location("gen_man", REPO / "scripts" / "gen_man.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_man = _gen_man()


def test_man_pages_match_the_app(tmp_path):
    """Regenerate into a temp dir; every page in man/ must exist and be identical."""
    gen_man.write(tmp_path)
    fresh = sorted(p.name for p in tmp_path.iterdir())
    have = sorted(p.name for p in (REPO / "man").glob("minerf*.[15]"))
    hint = "man/ is out of date: run python scripts/gen_man.py"
    assert fresh == have, f"{hint}\n  generated: {fresh}\n  in man/:   {have}"
    for name in fresh:
        assert (tmp_path / name).read_bytes() == (REPO / "man" / name).read_bytes(), f"{hint} ({name} differs)"


def test_generation_is_deterministic(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    gen_man.write(first)
    gen_man.write(second)
    assert gen_man.write(first) == []  # idempotent: nothing rewritten
    for page in first.iterdir():
        assert page.read_bytes() == (second / page.name).read_bytes()


def test_every_command_has_a_page_with_its_options():
    import typer.main

    from minerf_cli.app import app

    root = typer.main.get_command(app)
    pages = gen_man.render_all()
    assert {"minerf.1", "minerf-store.5"} <= pages.keys()
    for path, cmd in gen_man.walk(root):
        page = pages[f"{gen_man.page_name(path)}.1"]
        assert ".SH DESCRIPTION" in page and ".SH EXIT STATUS" in page and ".SH SEE ALSO" in page
        assert "Example" in page, f"{path}: the docstring has no Example line"
        for param in cmd.params:
            if param.param_type_name == "option" and not getattr(param, "hidden", False):
                for opt in param.opts:
                    assert gen_man.esc(opt) in page, f"{path}: option {opt} missing from its man page"
        assert f"minerf\\-{gen_man.esc(path[-1])}" in pages["minerf.1"] or "\\-".join(path) in pages["minerf.1"]


def test_store_page_lists_every_schema_node():
    from minerf_cli.store import SCHEMA

    page = gen_man.render_all()["minerf-store.5"]
    for name, node in SCHEMA.items():
        assert f'.SS "/{name}"' in page
        for dname in node.shapes:
            assert gen_man.esc(f"/{name}/{dname}" if dname else f"/{name}") in page
    for attr in ("format", "version", "created_by", "source_path", "source_sha256"):
        assert gen_man.bold(attr) in page
    assert "h5ls \\-r" in page and "h5py.File" in page


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_pages_render_without_groff_warnings():
    for page in sorted((REPO / "man").glob("minerf*.[15]")):
        out = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)], capture_output=True, text=True)
        assert out.returncode == 0 and out.stderr == "", f"{page.name}: {out.stderr}"
