-- Every shard manifest of one dataset as one relation (geoconcept/catalog.py).
-- $files:        the manifest Parquet files, shards/<dataset>/<source>/shard-NNNNNN.parquet
-- $val_fraction: share of records the IMG_ID hash sends to `val` (used by ingest_views.sql)
-- Sources may have different extra columns: union_by_name fills the missing ones with NULL.
SET VARIABLE manifest_files = $files;
SET VARIABLE val_fraction = $val_fraction;

CREATE OR REPLACE VIEW manifest_files AS
SELECT
    regexp_extract(filename, '([^/]+)/shard-[0-9]+\.parquet$', 1) AS source,
    * EXCLUDE (filename)
FROM read_parquet(getvariable('manifest_files'), union_by_name = true, filename = true);
