"""Benchmarks that were not run print "n/a", not "nan" (issue 20: `make bench BENCH_ARGS=--smoke`)."""

from __future__ import annotations

from benchmarks import report


def test_report_prints_na_for_values_not_measured():
    assert report._f(None, ".0f") == "n/a"
    assert report._f(float("nan"), ".0f") == "n/a"  # results written before: NaN for a skipped vmap
    assert report._f(12.34, ".1f") == "12.3"


def test_e2e_row_without_rss_says_na():
    lines = report._e2e(
        {
            "e2e": {
                "n_votes": 1000,
                "python_import_s": 1.0,
                "methods": {
                    "majority": {"cold_s": 1.0, "warm_cache_s": 0.5, "seconds_read": 0.1, "seconds_fit": 0.2, "peak_rss_mib": None}
                },
            }
        }
    )
    text = "\n".join(lines)
    assert "nan" not in text and "n/a" in text


def test_stream_section_renders_the_ratio_rows():
    row = {
        "method": "em2",
        "history_votes": 10**5,
        "update_s": 0.02,
        "update_state_s": 0.01,
        "refit_s": 0.05,
        "refit_first_s": 1.0,
        "update_over_refit": 0.4,
        "update_over_refit_first": 0.02,
        "max_abs_dposterior_vs_refit": 3e-9,
    }
    text = "\n".join(report._stream({"stream": {"batch_votes": 1000, "repeat": 3, "rows": [row]}}))
    assert "| em2 | 1e+05 | 20.0 ms | 10.0 ms | 50 ms | 1000 ms | 0.400 | 0.020 | 3e-09 |" in text
    assert report._stream({}) == [] and "skipped (no jax)" in report._stream({"stream": {"skipped": "no jax"}})[1]
