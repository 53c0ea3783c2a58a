"""What the operator and the serving pods agree on, and nothing else: the artifact's
digest and its fetching, the reference profile, the capture windows and their
merge, the routing table, and the serving settings (the MLOPS_SERVING_* variables
the operator writes into pods). Both sides import it; the operator imports nothing
else of the serving side (import-linter holds both to it)."""
