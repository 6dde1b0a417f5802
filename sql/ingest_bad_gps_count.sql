-- Accepted records whose coordinates are missing or out of range: must be 0 (asset check).
SELECT count(*) AS bad
FROM manifest_files
WHERE status = 'ok'
  AND (lat IS NULL OR lon IS NULL OR NOT (lat BETWEEN -90 AND 90) OR NOT (lon BETWEEN -180 AND 180));
