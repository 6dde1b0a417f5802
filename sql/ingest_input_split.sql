-- The input table had a `split` column: it decides the split where it says train, val or test.
CREATE OR REPLACE VIEW manifest_rows AS
SELECT *, lower(trim(CAST(split AS VARCHAR))) AS input_split
FROM manifest_files;
