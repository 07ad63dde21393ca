"""`python -m perdure.cli ...` runs the `perdure` command (used where the console script is not on PATH)."""

from perdure.cli import main

main()
