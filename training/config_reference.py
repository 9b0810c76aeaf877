"""Moved to ``pipeline.config_reference`` (issue 28); ``python -m training.config_reference`` still runs it."""
from pipeline.config_reference import main

if __name__ == "__main__":
    raise SystemExit(main())
