"""Apache Spark for the batch stages: read a lake, number it, fit `decay`, score every user.

Why Spark: past one machine a shop already runs a cluster; the stages whose work splits by
user (the per-user arrays, the decay EM per (user, category) pair, the scoring) run there as
they run locally, on whole users per partition, and give the same numbers. PySpark is an
optional dependency (``pip install ebbtide[spark]``); nothing else in ebbtide imports it.

Modules, in the order data flows: `session` (the SparkSession), `lake` (canonical events
from Parquet/CSV, every row used or counted), `numbering` (the model's codes, as
`Catalogue.localise` gives them), `partitions` (users to partitions, a partition to
`EventArrays`), `scoring` (a fitted model's answers per user, as Parquet), `decay_fit`
(the EM across partitions in barrier tasks) and `reducers` (how those tasks sum).
"""
