-- The split table of a dataset (see ingest_split_table.sql) written to $path as Parquet.
COPY (
    SELECT key, img_id, lat, lon, source, shard, split
    FROM splits
    ORDER BY source, "row"
) TO $path (FORMAT parquet, COMPRESSION zstd);
