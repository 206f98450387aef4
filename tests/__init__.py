"""drledger's tests, by what they need.

- unit/: no service at all (no process started, no connection opened; unit/conftest.py refuses both).
  `make test-unit`, or `pytest tests/unit`: seconds.
- integration/: real services the fixtures start (PostgreSQL clusters, Debezium on Java, the tansu
  broker, moto, MariaDB, Prometheus); each test there is marked `integration`.
- helpers.py: the plain functions tests share (`from tests.helpers import ...`); conftest.py files hold
  only fixtures. moto_fast.py is the moto server the AWS fixtures (and benchmarks/ledgers.py) start.

A package, so that the test modules and the two conftest.py files have names of their own, for pytest
and for mypy alike.
"""
