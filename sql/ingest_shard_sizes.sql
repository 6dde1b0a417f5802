-- What each finished shard holds: samples in its tar (status ok as written) and records in its manifest.
SELECT source, shard, count(*) FILTER (WHERE status = 'ok') AS samples, count(*) AS records
FROM manifest_files
GROUP BY source, shard
ORDER BY source, shard;
