-- No input table had a `split` column: the split comes from the source name and the IMG_ID hash.
CREATE OR REPLACE VIEW manifest_rows AS
SELECT *, CAST(NULL AS VARCHAR) AS input_split
FROM manifest_files;
