-- The staged input table of one source (geoconcept/ingest/staging.py).
-- $rows:   the row-numbered Parquet the streaming reader wrote (`row` + every input column as text)
-- $staged: where to write the staged table
-- Adds `duplicate_of`: for a row repeating an earlier row's IMG_ID, the row number of the first
-- occurrence (NULL otherwise). The aggregate, the join and the sort spill to disk, so a table of
-- millions of rows never has to fit in memory, and the answer is global across partitions.
COPY (
    WITH firsts AS (
        SELECT "IMG_ID", min("row") AS first_row
        FROM read_parquet($rows)
        GROUP BY "IMG_ID"
        HAVING count(*) > 1
    )
    SELECT s.*, CASE WHEN f.first_row < s."row" THEN f.first_row END AS duplicate_of
    FROM read_parquet($rows) AS s
    LEFT JOIN firsts AS f ON s."IMG_ID" = f."IMG_ID"
    ORDER BY s."row"
) TO $staged (
    FORMAT parquet,
    COMPRESSION zstd,
    ROW_GROUP_SIZE 16384,
    KV_METADATA {geoconcept_input_sha256: $input_sha256, geoconcept_staging_format: $staging_format}
);
