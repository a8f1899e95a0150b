"""Content hashes of the code a result ran: stable, location-independent, and sensitive to every byte."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from kb.codehash import changed_files, code_version
from reference_impls import registry

REPO = Path(__file__).resolve().parents[2]


def _copy_code(dest: Path) -> Path:
    shutil.copytree(REPO / "reference_impls", dest / "reference_impls",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    return dest


def test_hash_is_stable_and_independent_of_order_and_location(tmp_path):
    files = registry.code_files(REPO, registry.paper_methods("owl"), "owl")
    here = code_version(REPO, files)
    assert here == code_version(REPO, list(reversed(files)))  # the order files are listed in does not matter
    assert here.hash == registry.paper_code("owl").hash
    copy = _copy_code(tmp_path / "elsewhere")
    assert registry.paper_code("owl", copy) == here  # another checkout of the same code: same hash
    (copy / "reference_impls" / "harness" / "__pycache__").mkdir(exist_ok=True)
    (copy / "reference_impls" / "harness" / "__pycache__" / "junk.py").write_text("x = 1\n")
    assert registry.paper_code("owl", copy) == here  # caches are not code


def test_files_of_a_paper_are_what_its_runs_import_and_its_claim():
    files = registry.code_files(REPO, registry.paper_methods("owl"), "owl")
    assert {"reference_impls/owl.py", "reference_impls/wanda.py", "reference_impls/magnitude.py",
            "reference_impls/sparsegpt.py"} <= set(files)  # fmt: skip
    assert "reference_impls/shortgpt.py" not in files  # another paper's method
    for shared in ("harness/runner.py", "harness/metrics.py", "harness/evaluate.py", "harness/probe.py",
                   "harness/layerwise.py", "primitives/masks.py", "registry/specs.py", "claims/_kit.py",
                   "claims/owl.py", "claims/wanda.py", "claims/sparsegpt.py", "claims/baselines.py"):  # fmt: skip
        assert f"reference_impls/{shared}" in files  # its claim and those declaring its arms' methods
    # what no run of OWL imports: another paper's claim, the modules joining the claims, unrelated primitives
    for other in ("claims/ria.py", "claims/shortgpt.py", "registry/__init__.py", "claims/__init__.py",
                  "primitives/blocks.py", "harness/recovery.py"):  # fmt: skip
        assert f"reference_impls/{other}" not in files
    assert files == sorted(files)
    width = registry.code_files(REPO, registry.paper_methods("llm-pruner"), "llm-pruner")
    assert {"reference_impls/harness/recovery.py", "reference_impls/primitives/groups.py"} <= set(width)


def test_any_edit_addition_or_removal_changes_the_hash(tmp_path):
    root = _copy_code(tmp_path)
    before = registry.paper_code("wanda", root)
    impl = root / "reference_impls" / "wanda.py"
    impl.write_bytes(impl.read_bytes() + b"\n")  # one byte
    edited = registry.paper_code("wanda", root)
    assert edited.hash != before.hash and changed_files(before, edited) == ["reference_impls/wanda.py"]
    impl.write_bytes(impl.read_bytes()[:-1])
    assert registry.paper_code("wanda", root) == before
    (root / "reference_impls" / "primitives" / "new_helper.py").write_text("VALUE = 1\n")
    assert registry.paper_code("wanda", root) == before  # nothing the paper runs imports it yet
    masks = root / "reference_impls" / "primitives" / "masks.py"
    masks.write_text(masks.read_text() + "from .new_helper import VALUE\n")  # now something does
    added = registry.paper_code("wanda", root)
    assert changed_files(before, added) == ["reference_impls/primitives/masks.py",
                                            "reference_impls/primitives/new_helper.py"]  # fmt: skip
    masks.write_text(masks.read_text().replace("from .new_helper import VALUE\n", ""))
    assert registry.paper_code("wanda", root) == before
    # an edit to a method the paper does not run, or to another paper's claim, leaves its hash alone
    claim = root / "reference_impls" / "claims" / "shortgpt.py"
    claim.write_text(claim.read_text() + "# edited\n")
    other = root / "reference_impls" / "shortgpt.py"
    other.write_text(other.read_text() + "# edited\n")
    assert registry.paper_code("wanda", root) == before


def test_hashing_is_torch_free():
    code = "import sys; from reference_impls import registry; registry.paper_code('wanda'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
