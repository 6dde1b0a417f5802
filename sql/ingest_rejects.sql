-- Rejected records of a dataset in input order, at most $limit of them (NULL: all).
SELECT *
FROM rejects
ORDER BY source, "row"
LIMIT $limit;
