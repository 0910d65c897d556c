"""The one Markdown table writer."""

from __future__ import annotations

from src.utils.tables import markdown_table


def test_a_table_aligns_numbers_right_and_escapes_bars():
    table = markdown_table(["run", "PSNR"], [["a|b", "30.1234"]], [False, True])
    assert table.splitlines() == ["| run | PSNR |", "|---|---:|", "| a\\|b | 30.1234 |"]


def test_the_report_and_zoo_tables_are_the_ones_the_readme_shows():
    from src.metrics.report import SetSummary
    from src.metrics.report import markdown_table as report_table

    summary = SetSummary("Set5", 5, 32.2096, 0.8948, 30.1, 0.87)
    lines = report_table([summary]).splitlines()
    assert lines[0] == (
        "| set | images | PSNR_Y | SSIM_Y | PSNR_RGB | SSIM_RGB | published Y | ours - published |"
    )
    assert lines[1] == "|---|---:|---:|---:|---:|---:|---:|---:|"
    assert lines[2] == "| Set5 | 5 | 32.2096 | 0.8948 | 30.1000 | 0.8700 | - | - |"
