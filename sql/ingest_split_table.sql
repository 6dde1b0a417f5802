-- The accepted samples of a dataset with their split, in source and input order.
SELECT key, img_id, lat, lon, source, shard, split
FROM splits
ORDER BY source, "row";
