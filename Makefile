# The verbs people type; each is a thin wrapper over dev.py (which needs only Python 3.11+).
.PHONY: setup demo test lint bench simulate
setup: ; python3 dev.py setup
demo: ; python3 dev.py demo
test: ; python3 dev.py test
lint: ; python3 dev.py lint
bench: ; python3 dev.py bench
simulate: ; python3 dev.py simulate --seeds $(or $(SEEDS),1000)
