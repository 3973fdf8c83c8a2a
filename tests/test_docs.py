"""The README and docs/: every included table equals the file its script wrote, every such file
is what its script writes from the saved results, and every relative link resolves.

Nothing here writes into the repository: the scripts that must run write into tmp_path.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from repo_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


include = load_script(ROOT / "docs" / "include.py", "docs_include")
PAGES = include.pages(ROOT)


def test_the_pages_exist_and_the_readme_stays_short():
    names = {page.name for page in PAGES}
    assert {"README.md", "reference-runs.md", "fine-tuning.md", "positions.md", "performance.md",
            "gradient-checks.md", "decisions.md"} <= names
    assert len((ROOT / "README.md").read_text().splitlines()) <= 320


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_included_block_equals_its_file(page):
    for path, body, wanted in include.blocks(page, ROOT):
        assert body == wanted, (f"{page.relative_to(ROOT)}: the block of {path} differs from the file; "
                                "run python docs/include.py")


def test_every_study_page_includes_a_table():
    for name in ("reference-runs.md", "fine-tuning.md", "positions.md", "performance.md"):
        assert include.blocks(ROOT / "docs" / name, ROOT), f"docs/{name} includes no table"


def test_every_included_table_states_machine_versions_and_commit():
    for page in PAGES:
        for path, _, text in include.blocks(page, ROOT):
            stated = next(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
            assert stated.startswith("Measured on ") and "NumPy " in stated and "commit " in stated, \
                f"{path} does not open by stating machine, versions and commit: {stated[:120]!r}"


def page_with(tmp_path: Path, text: str) -> Path:
    (tmp_path / "docs").mkdir(exist_ok=True)
    page = tmp_path / "docs" / "page.md"
    page.write_text(text)
    return page


def test_a_marker_naming_a_missing_file_is_an_error(tmp_path):
    page = page_with(tmp_path, "<!-- include benchmarks/results/gone.md -->\nold\n<!-- end include -->\n")
    with pytest.raises(ValueError, match="included file benchmarks/results/gone.md does not exist"):
        include.blocks(page, tmp_path)


def test_a_marker_without_its_end_is_an_error(tmp_path):
    (tmp_path / "t.md").write_text("| a |\n")
    page = page_with(tmp_path, "<!-- include t.md -->\n| a |\n")
    with pytest.raises(ValueError, match="without its '<!-- end include -->'"):
        include.blocks(page, tmp_path)


def test_a_stale_block_is_found_and_include_rewrites_it(tmp_path):
    (tmp_path / "README.md").write_text("no tables\n")
    (tmp_path / "t.md").write_text("| new |\n")
    page = page_with(tmp_path, "before\n<!-- include t.md -->\n| old |\n<!-- end include -->\nafter\n")
    assert include.stale(tmp_path) == ["docs/page.md: t.md"]
    assert include.include(page, tmp_path)
    assert page.read_text() == "before\n<!-- include t.md -->\n| new |\n<!-- end include -->\nafter\n"
    assert include.stale(tmp_path) == []


# ---- the tables are the scripts' own: written again from the saved results, they are the same ----


def test_the_reference_runs_tables_are_what_the_script_writes():
    reference_runs = load_script(ROOT / "benchmarks" / "reference_runs.py", "reference_runs_for_docs")
    paths = sorted(RESULTS.glob("reference_runs*.json"), key=lambda p: (p.stem != "reference_runs", p.stem))
    assert (RESULTS / "reference_runs-all.md").read_text() == reference_runs.combined_table(paths)
    for path in paths:
        assert path.with_suffix(".md").read_text() == reference_runs.markdown(json.loads(path.read_text()))


def test_the_recipe_sweep_table_is_what_the_script_writes():
    recipe_sweep = load_script(ROOT / "benchmarks" / "recipe_sweep.py", "recipe_sweep_for_docs")
    runs = [json.loads(p.read_text()) for p in sorted((RESULTS / "recipe_sweep").glob("*.json"))]
    assert (RESULTS / "recipe_sweep.md").read_text() == recipe_sweep.table(runs)


def test_the_modern_cost_table_is_what_the_script_writes():
    modern_cost = load_script(ROOT / "benchmarks" / "modern_cost.py", "modern_cost_for_docs")
    saved = json.loads((RESULTS / "modern_cost.json").read_text())
    assert (RESULTS / "modern_cost.md").read_text() == modern_cost.table(saved)


def test_the_benchmark_tables_are_what_the_script_writes():
    run = load_script(ROOT / "benchmarks" / "run.py", "run_for_docs")
    saved = json.loads((RESULTS / "benchmark.json").read_text())
    assert (RESULTS / "benchmark.md").read_text() == run.tables(saved)
    assert (RESULTS / "README.md").read_text() == run.markdown(saved)
    before_after = json.loads((RESULTS / "layers_before_after.json").read_text())
    assert (RESULTS / "layers_before_after.md").read_text() == run.before_after_table(before_after)


def test_the_gpt2_table_is_what_the_script_writes():
    pytest.importorskip("torch", reason="benchmarks/gpt2_bench.py imports PyTorch, its other side")
    pytest.importorskip("transformers", reason="benchmarks/gpt2_bench.py imports transformers")
    bench = load_script(ROOT / "benchmarks" / "gpt2_bench.py", "gpt2_bench_for_docs")
    saved = json.loads((RESULTS / "gpt2.json").read_text())
    assert saved["quick"] is False
    assert (RESULTS / "gpt2.md").read_text() == bench.markdown(saved)


@pytest.mark.parametrize("script,results", [("positions_study.py", "positions_study.json"),
                                            ("finetune_experiment.py", "finetune.json")])
def test_the_study_tables_are_what_the_scripts_write(tmp_path, script, results):
    saved = tmp_path / results
    shutil.copy(RESULTS / results, saved)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--table", "--out", str(saved),
                           "--figure", str(tmp_path / "figure.png")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert saved.with_suffix(".md").read_text() == (RESULTS / results).with_suffix(".md").read_text()


# ---- links ----------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces -> '-'."""
    out = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def outside_code(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(outside_code(page.read_text())):
        if re.match(r"[a-z]+:", target):           # https:, mailto:: not ours to check offline
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading with that anchor)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](#title) [gone](missing.md) ![fig](figures/none.png) [bad](#nowhere)\n")
    found = LINK.findall(page.read_text())
    assert found == ["#title", "missing.md", "figures/none.png", "#nowhere"]
    assert "title" in anchors(page) and "nowhere" not in anchors(page)
