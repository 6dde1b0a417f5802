-- Views over the manifest rows of one dataset (geoconcept/catalog.py documents them).

-- Every accepted copy of an image (by the sha256 of its input bytes), ranked across the whole
-- dataset: copies in the `test` source come first, then by source name and row. So an image that
-- is both in a test set and in training stays in the test set and leaves training (no leak), and
-- within a source the first row wins.
CREATE OR REPLACE VIEW copy_ranks AS
SELECT
    source, "row",
    row_number() OVER copies AS copy_rank,
    first_value(img_id) OVER copies AS first_img_id,
    first_value(source) OVER copies AS first_source,
    first_value("row") OVER copies AS first_row
FROM manifest_rows
WHERE status = 'ok'
WINDOW copies AS (PARTITION BY sha256 ORDER BY source <> 'test', source, "row");

-- Shards are written independently (in parallel, possibly on many machines), so each shard
-- only drops copies of an image within itself; copies elsewhere in the dataset are marked here:
-- every accepted copy after the first becomes `duplicate_content`.
-- `in_tar` keeps what the shard holds: true when the sample is in its tar.
CREATE OR REPLACE VIEW checked_rows AS
SELECT
    m.* REPLACE (
        CASE WHEN c.copy_rank > 1 THEN 'duplicate_content' ELSE m.status END AS status,
        CASE
            WHEN c.copy_rank > 1
                THEN 'same image bytes as IMG_ID ' || c.first_img_id
                    || ' (source ' || c.first_source || ', row ' || c.first_row || ')'
            ELSE m.detail
        END AS detail
    ),
    m.status = 'ok' AS in_tar
FROM manifest_rows AS m
LEFT JOIN copy_ranks AS c ON m.status = 'ok' AND c.source = m.source AND c."row" = m."row";

CREATE OR REPLACE VIEW samples AS
SELECT * EXCLUDE (input_split)
FROM checked_rows;

CREATE OR REPLACE VIEW rejects AS
SELECT source, shard, "row", img_id, key, status, detail, sha256
FROM samples
WHERE status <> 'ok';

-- Split rule: the input's split column (train/val/test) wins; else the source `test` is test;
-- else the first 32 bits of the key (a hash of IMG_ID) send `val_fraction` of records to val.
CREATE OR REPLACE VIEW splits AS
SELECT
    key, img_id, lat, lon, source, shard, "row",
    CASE
        WHEN input_split IN ('train', 'val', 'test') THEN input_split
        WHEN source = 'test' THEN 'test'
        WHEN CAST('0x' || substr(key, 1, 8) AS UBIGINT) < getvariable('val_fraction') * 4294967296 THEN 'val'
        ELSE 'train'
    END AS split
FROM checked_rows
WHERE status = 'ok';

CREATE OR REPLACE VIEW split_counts AS
SELECT source, split, count(*) AS samples
FROM splits
GROUP BY source, split
ORDER BY source, split;
