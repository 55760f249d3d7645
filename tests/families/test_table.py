"""The published family x method table is the one the registries generate (it cannot drift)."""

from pathlib import Path

from lightning_xai.families.table import BEGIN, END, document, markdown

ROOT = Path(__file__).resolve().parents[2]


def test_docs_and_readme_show_the_generated_table():
    assert (ROOT / "docs" / "families.md").read_text() == document(), "run: python -m lightning_xai.families.table"
    readme = (ROOT / "README.md").read_text()
    assert f"{BEGIN}\n{markdown()}{END}" in readme, "paste the output of lightning_xai.families.table.markdown()"
