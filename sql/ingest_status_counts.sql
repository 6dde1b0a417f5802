-- Records per source and status, after the cross-shard duplicate_content rule (the `samples` view).
SELECT source, status, count(*) AS records
FROM samples
GROUP BY source, status
ORDER BY source, status;
