"""Study shards: the Parquet contract between ingestion and every later stage."""
