"""The learning-curve and ablation reports: tables from the JSONL rows, one plot per dataset,
runs found in the file skipped on the next start."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from benchmarks.transfer import data_efficiency, recipe_ablation


def row(data: str, size: str, seed: int, strategy: str, acc: float, **kw: object) -> dict:
    return {"data": data, "size": size, "seed": seed, "strategy": strategy,
            "chosen": kw.get("chosen", strategy), "eval_split": kw.get("split", "test"),
            "accuracy": acc, "n_train": 8454 if size == "all" else int(size),
            "machine": "Some CPU, 2 cores (load average 1.0 at the start), Python 3"}


def test_learning_curve_report_means_and_plots(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    rows = [row("movie-reviews", "0", 0, "zero-shot", 0.72),
            row("movie-reviews", "100", 0, "full", 0.76), row("movie-reviews", "100", 1,
                                                             "full", 0.78),
            row("movie-reviews", "100", 0, "auto", 0.77, chosen="self-train"),
            row("movie-reviews", "all", 0, "full", 0.85),
            row("movie-reviews", "100", 0, "full", 0.10, split="validation")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = types.SimpleNamespace(eval_split="test", strategies="zero-shot,full,auto",
                                 sizes="0,100,all", docs=str(tmp_path), data="movie-reviews")
    text = data_efficiency.report(args, path)
    assert "0.770 ± 0.014 (2)" in text  # the validation row is not mixed in
    assert "[self-train]" in text and "all (8,454)" in text and "0.720" in text
    assert (tmp_path / "data_efficiency_movie-reviews.svg").exists()
    assert "Some CPU, 2 cores" in text and "load average" not in text
    done = {data_efficiency.run_key(r) for r in data_efficiency.load_rows(path)}
    assert ("movie-reviews", "100", 1, "full", "test") in done


def test_ablation_rows_are_unique_and_reported_in_order(tmp_path: Path) -> None:
    names = [name for name, *_ in recipe_ablation.STEPS]
    assert len(set(names)) == len(names)
    path = tmp_path / "ablation.jsonl"
    path.write_text("".join(json.dumps({"row": n, "size": 100, "seed": s, "accuracy": a,
                                        "seconds": 10.0, "machine": "cpu (load 2)"}) + "\n"
                            for n, s, a in [(names[3], 0, 0.74), (names[0], 0, 0.68),
                                            (names[3], 1, 0.76)]))
    text = recipe_ablation.report(types.SimpleNamespace(sizes="100"), path)
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert lines[1].startswith(f"| {names[0]}") and "0.750 ± 0.014 (2)" in lines[2]


@pytest.mark.parametrize("module", [data_efficiency, recipe_ablation])
def test_the_sweeps_explain_their_flags(module: types.ModuleType,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        module.main(["--help"])
    assert "--report-only" in capsys.readouterr().out
