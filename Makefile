# Aliases for the two scripts the README documents (they need no make). Extra arguments go in
# ARGS, e.g. `make run ARGS="--records 5000"` or `make test ARGS="-x tests/unit"`.
.PHONY: run test docker-image

run:
	bash scripts/run $(ARGS)

test:
	bash scripts/test $(ARGS)

# Needs a Docker engine (see docker/README.md).
docker-image:
	docker build -f docker/Dockerfile -t annal .
