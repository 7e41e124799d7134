"""Audits: the age, gender and race make-up of a photo collection, corrected for the model's errors.

`argml audit` (argml.audit.__main__) runs argml.audit.run: sources (what to read) -> store (the plan and
its shards) -> engines (in-process or a dask/ray/spark cluster) running worker.audit_shard -> report
(raw and corrected shares, quantify) -> tracking (MLflow). argml.audit.proof measures the correction on
skewed collections drawn from the test split; argml.audit.cluster starts loopback clusters for tests and
`argml bench audit`.
"""
