"""Asset values as small JSON documents (paths, hashes, counts) — never pickle.

Assets in geoconcept write their real outputs as files under the data root; what they return
is a JSON-able pointer to those files (e.g. a checkpoint's path and sha256). Passing that pointer
through Dagster's I/O keeps lineage real: an evaluation reads the checkpoint its upstream run
produced, not "the newest file on disk". Built on Dagster's UPathIOManager, so the same code
works on a local folder or an fsspec URL (s3://, gs://) shared by every worker.
"""

from __future__ import annotations

import json
from typing import Any

from dagster import ConfigurableIOManagerFactory, InputContext, OutputContext, UPathIOManager
from upath import UPath


class JsonIOManager(UPathIOManager):
    extension = ".json"

    def dump_to_path(self, context: OutputContext, obj: Any, path: UPath) -> None:
        text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename so a reader never sees half a document (object stores are atomic per PUT).
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.rename(path)

    def load_from_path(self, context: InputContext, path: UPath) -> Any:
        return json.loads(path.read_text())


class JsonIOManagerFactory(ConfigurableIOManagerFactory):
    """`base_dir`: a local folder or an fsspec URL reachable from every executor worker; `subdir`: a
    folder under it (so `base_dir` can be the data root's EnvVar, bound as is)."""

    base_dir: str
    subdir: str = ""

    def create_io_manager(self, context) -> JsonIOManager:
        return JsonIOManager(base_path=UPath(self.base_dir) / self.subdir if self.subdir else UPath(self.base_dir))
