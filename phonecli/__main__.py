"""`python -m phonecli ...` (what `torchrun -m phonecli extract ...` runs)."""

from phonecli.cli import main

main()
