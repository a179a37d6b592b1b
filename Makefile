.PHONY: demo test setup

demo:
	python3 scripts/dev.py demo

test:
	python3 scripts/dev.py test

setup:
	python3 scripts/dev.py setup
