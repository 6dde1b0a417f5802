"""Evaluation and interpretability: accuracy tables, concept faithfulness, downstream probes,
explanations, maps and the evaluation report.

Modules (import what you need; this package imports nothing heavy by itself):

* `metrics` — `haversine_km`, `accuracy_within`, `error_summary` (the one function every
  accuracy figure comes from), mean ± spread over seeds, the Im2GPS3k-shaped accuracy table;
  no torch.
* `testset` — the test samples (cached features, keys, coordinates) and their concept labels.
* `predict` — gallery top-1 (optionally refined over the top k) and the predictions GeoParquet.
* `faithfulness` — per-concept AUROC/AP on held-out points, concept maps vs raster truth,
  the per-error-bin concept table.
* `downstream` — linear and MLP probes of location representations on geographic tasks.
* `explain` — top-k GPS guesses with GeoNames places and signed concept contributions.
* `figures`, `report` — PNG figures and the Markdown + HTML report.
* `config` — what an evaluation reads and writes (YAML or code); `evaluate` — the `evaluate`
  function that runs all of the above on explicit inputs and writes the report folder.
"""
