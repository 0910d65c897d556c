"""The README's model table (section "Models (`conf/model`)") against ``conf/model``.

Every ``conf/model/*.yaml`` has one row, every row names a config that exists, the network column
is the class the config's ``net._target_`` builds, and a parameter count also in the model zoo
table is the same figure there.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
MODEL_DIR = REPO_ROOT / "conf" / "model"
MODELS_HEADING = "### Models (`conf/model`)"
ZOO_HEADING = "### Model zoo (`make zoo`"


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _table_after(text: str, heading: str) -> list[dict[str, str]]:
    """The rows (column name -> cell) of the first markdown table under the ``heading`` line."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(heading)]
    assert len(starts) == 1, f"README.md: expected one heading {heading!r}, found {len(starts)}"
    rows: list[list[str]] = []
    for line in lines[starts[0] + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    assert len(rows) > 2, f"README.md: no table under {heading!r}"
    header, separator, *body = rows
    assert set("".join(separator)) <= set("-: "), f"README.md: not a table header: {header}"
    for row in body:
        assert len(row) == len(header), f"README.md: {len(row)} cells, not {len(header)}: {row}"
    return [dict(zip(header, row, strict=True)) for row in body]


def _unquote(cell: str) -> str:
    return cell.strip().strip("`")


def _table_models(text: str) -> dict[str, dict[str, str]]:
    """The model table's rows by config name; a name listed twice fails."""
    rows = _table_after(text, MODELS_HEADING)
    names = [_unquote(row["model"]) for row in rows]
    repeated = sorted({name for name in names if names.count(name) > 1})
    assert not repeated, f"README.md's model table lists these more than once: {repeated}"
    return dict(zip(names, rows, strict=True))


def _config_names() -> list[str]:
    # Only the top level: conf/model/base/ holds what every config shares, not a `model=` choice.
    return sorted(path.stem for path in MODEL_DIR.glob("*.yaml"))


def _check_names(text: str) -> None:
    listed = set(_table_models(text))
    configs = set(_config_names())
    missing = sorted(configs - listed)
    unknown = sorted(listed - configs)
    assert not missing, f"conf/model configs missing from README.md's model table: {missing}"
    assert not unknown, f"README.md's model table names configs not in conf/model: {unknown}"


def _net_target(name: str) -> str:
    """``net._target_`` of ``conf/model/<name>.yaml``, following its defaults to a parent config."""
    config = yaml.safe_load((MODEL_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    target = (config.get("net") or {}).get("_target_")
    if target:
        return target
    parents = [
        entry
        for entry in config.get("defaults", [])
        if isinstance(entry, str) and (MODEL_DIR / f"{entry}.yaml").is_file()
    ]
    assert parents, f"conf/model/{name}.yaml: no net._target_ and no parent model config"
    return _net_target(parents[-1])


def test_the_readme_model_table_lists_exactly_the_model_configs() -> None:
    assert len(_config_names()) > 1
    _check_names(_readme())


@pytest.mark.parametrize("name", _config_names())
def test_network_column_is_the_configs_target(name: str) -> None:
    rows = _table_models(_readme())
    if name not in rows:
        pytest.fail(f"conf/model/{name}.yaml is missing from README.md's model table")
    assert _unquote(rows[name]["network"]) == _net_target(name).rsplit(".", 1)[-1]


def test_parameter_counts_agree_with_the_zoo_table() -> None:
    text = _readme()
    ours = {name: row["params (x4)"] for name, row in _table_models(text).items()}
    zoo = {_unquote(row["model"]): row["params"] for row in _table_after(text, ZOO_HEADING)}
    differ = {
        name: (ours[name], count) for name, count in zoo.items() if ours.get(name, count) != count
    }
    assert not differ, f"parameters (model table, zoo table) that differ: {differ}"


def test_the_check_fails_on_a_missing_or_unknown_config() -> None:
    text = _readme()
    row = re.compile(r"^\| `edsr_large` \|.*\n", re.MULTILINE)
    assert row.search(text), "README.md: no edsr_large row"
    with pytest.raises(AssertionError, match=r"missing .*edsr_large"):
        _check_names(row.sub("", text, count=1))
    renamed = row.sub(lambda m: m.group(0).replace("`edsr_large`", "`edsr_huge`"), text, count=1)
    with pytest.raises(AssertionError, match=r"missing .*edsr_large"):
        _check_names(renamed)
    added = row.sub(lambda m: m.group(0) + m.group(0).replace("edsr_large", "edsr_huge"), text)
    with pytest.raises(AssertionError, match=re.escape("not in conf/model: ['edsr_huge']")):
        _check_names(added)


CHOICES_HEADING = "### What each network declares, and every setting with fixed values"


def test_readme_choices_and_declarations_are_the_generated_tables() -> None:
    from src.models.zoo import choices_markdown

    text = _readme()
    start = text.index(CHOICES_HEADING)
    section = text[start : text.index("\n### ", start + 1)]
    assert choices_markdown() in section, "README: rerun `python -m src.models choices`"


RECIPES_HEADING = "### Recipes (`conf/experiment`)"


def recipes_section(text: str) -> str:
    start = text.index(RECIPES_HEADING)
    return text[start : text.index("\n### ", start + 1)]


def test_readme_recipe_table_is_the_generated_one() -> None:
    from src.models.recipes import recipes_markdown

    assert recipes_markdown() in recipes_section(_readme()), (
        "README: rerun `python -m src.models recipes`"
    )


def test_the_recipe_check_fails_on_a_missing_experiment(monkeypatch) -> None:
    from src.models import recipes

    table = recipes.recipes_markdown()
    names = recipes.experiment_names()
    monkeypatch.setattr(recipes, "experiment_names", lambda: names[:-1])
    shorter = recipes.recipes_markdown()
    assert shorter != table and f"| {names[-1]} |" not in shorter
    assert f"| {names[-1]} |" in table
