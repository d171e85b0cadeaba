"""The repository's folders, defined once (standard library only: `python -m rtlib data`
imports it before anything is installed)."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOOK_DIR = REPO / "book"
DATA_DIR = REPO / "data"
RESULTS_DIR = REPO / "results"
RECORDS_DIR = RESULTS_DIR / "records"
REPEATS_DIR = RESULTS_DIR / "repeats" / "records"  # second runs of recorded runs, kept apart
SUPERSEDED_DIR = RESULTS_DIR / "superseded"  # runs whose settings configs.py no longer gives (its README)
ANALYSIS_DIR = RESULTS_DIR / "analysis"
BATCHES_DIR = RESULTS_DIR / "batches"
BENCH_DIR = RESULTS_DIR / "bench"
RUNS_DIR = REPO / "runs"
