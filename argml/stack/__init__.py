"""Team mode: the stack of existing engines a team shares (PostgreSQL for MLflow's store, SeaweedFS's S3 for
artifacts and the DVC remote, `mlflow server`), started, checked, backed up and stopped on 127.0.0.1.

state (the folder and stack.json), postgres, seaweed, mlflow_server (one module per engine), engines (up,
down, status of the three), backup (backup and restore), cli (`python -m argml.stack --help`).
"""
