"""Moved to ``pipeline.sweep`` (issue 28); ``python -m training.sweep`` still runs it."""
from pipeline.sweep import main

if __name__ == "__main__":
    raise SystemExit(main())
