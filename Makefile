# Two entry points do all the set-up on a fresh machine: `make demo` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.recstack-installed
TORCH  := torch==2.13.0

.PHONY: setup demo test test-fast serve clean

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

demo: setup   ## train DIN + two-tower on MovieLens-100K, start the recommendation service
	$(PY) -m recstack.demo

test: setup   ## the whole suite, slow end-to-end tests included
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: setup
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider

clean:
	rm -rf $(VENV) runs .cache

serve: setup  ## serve recall (DSSM) + rank (DIN) on MovieLens-100K with the demo page (after make demo)
	$(PY) -m recstack.cli serve --retrieval runs/ml100k_dssm --ranker runs/ml100k_din \
	  --catalog data/ml100k_retrieval/items.parquet --users data/ml100k_retrieval/users.parquet \
	  --history data/ml100k_retrieval/train.parquet --port 8000
