"""Team mode: the stack of existing engines a team shares (PostgreSQL for MLflow's store, an S3 server for
artifacts and the DVC remote, `mlflow server`), started, checked and stopped on 127.0.0.1.

`python -m argml.stack --help` (or `argml stack --help`).
"""
