"""Concept embeddings: determinism, the file format, the bank check, pretrained weights offline."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from geoconcept.cli import main
from geoconcept.concepts.bank import load_bank
from geoconcept.concepts.embeddings import (
    METADATA_KEYS,
    RANDOM_INIT_WARNING,
    check_matches_bank,
    embed_concepts,
    load_concept_embeddings,
)
from geoconcept.errors import ConfigError, InputError

SMALL_MODEL = "ViT-S-32-alt"  # same code path as ViT-B-32, a fifth of the work


def small_bank_file(folder: Path, first_prompt: str = "a photo of a beach") -> Path:
    path = folder / "bank.yaml"
    doc = {
        "version": "t1",
        "concepts": [
            {"id": "beach", "name": "Beach", "category": "water", "prompts": [first_prompt, "sand and waves"]},
            {"id": "snow", "name": "Snow", "category": "weather", "prompts": ["a snowy street"]},
            {"id": "temple", "name": "Temple", "category": "architecture", "prompts": ["a temple", "a pagoda"]},
        ],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def bank(tmp_path):
    return load_bank(small_bank_file(tmp_path))


def test_default_model_is_deterministic_and_says_it_is_random(tmp_path, bank):
    first = embed_concepts(bank, out_path=tmp_path / "a.safetensors")
    second = embed_concepts(bank, out_path=tmp_path / "b.safetensors")
    assert first.model == "ViT-B-32" and first.dim == 512
    assert first.warning == RANDOM_INIT_WARNING and not first.pretrained_weights_loaded
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (first.path, second.path)]
    assert digest[0] == digest[1]


def test_an_up_to_date_file_is_reused_and_a_changed_bank_is_re_embedded(tmp_path, bank):
    out = tmp_path / "e.safetensors"
    embed_concepts(bank, SMALL_MODEL, out_path=out)
    before = out.stat().st_mtime_ns
    again = embed_concepts(bank, SMALL_MODEL, out_path=out)
    assert out.stat().st_mtime_ns == before and again.concept_ids == bank.ids
    (tmp_path / "other").mkdir()
    changed = load_bank(small_bank_file(tmp_path / "other", first_prompt="a photo of a harbour"))
    info = embed_concepts(changed, SMALL_MODEL, out_path=out)
    assert out.stat().st_mtime_ns != before and info.bank_sha256 == changed.sha256


def test_file_format(tmp_path, bank):
    info = embed_concepts(bank, SMALL_MODEL, out_path=tmp_path / "concepts" / "embeddings.safetensors")
    with safe_open(info.path, framework="pt") as fh:
        assert list(fh.keys()) == ["embeddings"]
        metadata = fh.metadata()
        matrix = fh.get_tensor("embeddings")
    assert sorted(metadata) == sorted(METADATA_KEYS)
    assert json.loads(metadata["concept_ids"]) == ["beach", "snow", "temple"]
    assert metadata["bank_sha256"] == bank.sha256 and metadata["bank_version"] == "t1"
    assert metadata["model"] == SMALL_MODEL
    assert metadata["pretrained"] == "none" and metadata["pretrained_weights_loaded"] == "false"
    assert matrix.dtype == torch.float32 and matrix.shape == (3, info.dim)
    assert torch.allclose(matrix.norm(dim=1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(matrix[0], matrix[1])
    assert [p.name for p in info.path.parent.iterdir()] == ["embeddings.safetensors"]  # no temporaries


def test_load_checks_the_bank(tmp_path, bank):
    info = embed_concepts(bank, SMALL_MODEL, out_path=tmp_path / "e.safetensors")
    loaded = load_concept_embeddings(info.path, bank)
    assert loaded.info.concept_ids == bank.ids and loaded.embeddings.shape == (3, info.dim)
    other = tmp_path / "other"
    other.mkdir()
    changed = load_bank(small_bank_file(other, first_prompt="a photo of a sandy beach"))
    with pytest.raises(ConfigError, match="the bank changed"):
        load_concept_embeddings(info.path, changed)
    tampered = dataclasses.replace(loaded.info, concept_ids=["beach", "temple", "snow"])
    with pytest.raises(ConfigError, match="other concept ids"):
        check_matches_bank(tampered, bank)


def test_local_checkpoint_is_used(tmp_path, bank):
    import open_clip
    from safetensors.torch import save_file

    with torch.random.fork_rng():
        torch.manual_seed(123)
        model = open_clip.create_model(SMALL_MODEL, pretrained=None).eval()
    checkpoint = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, checkpoint)
    info = embed_concepts(bank, SMALL_MODEL, pretrained=checkpoint, out_path=tmp_path / "e.safetensors")
    assert info.pretrained_weights_loaded and info.pretrained == str(checkpoint) and info.warning is None
    tokenizer = open_clip.get_tokenizer(SMALL_MODEL)
    with torch.no_grad():
        prompts = torch.nn.functional.normalize(model.encode_text(tokenizer(["a temple", "a pagoda"])), dim=-1)
    expected = torch.nn.functional.normalize(prompts.mean(dim=0), dim=0)
    got = load_concept_embeddings(info.path).embeddings
    assert torch.allclose(got[2], expected, atol=1e-5)
    random_init = load_concept_embeddings(embed_concepts(bank, SMALL_MODEL, out_path=tmp_path / "r.safetensors").path)
    assert not torch.allclose(got, random_init.embeddings, atol=1e-3)


def test_hub_tag_fails_offline_with_a_clear_error(tmp_path, bank, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="local checkpoint file path"):
        embed_concepts(bank, "ViT-B-32", pretrained="openai", out_path=tmp_path / "e.safetensors")
    assert not (tmp_path / "e.safetensors").exists()


@pytest.mark.parametrize(
    ("model", "pretrained", "expected"),
    [
        ("ViT-Nope-1", None, "unknown open_clip model"),
        (SMALL_MODEL, "/no/such/weights.safetensors", "not found"),
        (SMALL_MODEL, "no_such_tag", "neither a checkpoint file nor a pretrained tag"),
    ],
)
def test_bad_model_or_weights(tmp_path, bank, model, pretrained, expected):
    with pytest.raises(ConfigError, match=expected):
        embed_concepts(bank, model, pretrained=pretrained, out_path=tmp_path / "e.safetensors")


def test_unreadable_embeddings_file(tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(InputError, match=r"broken\.safetensors"):
        load_concept_embeddings(broken)
    with pytest.raises(InputError, match="not found"):
        load_concept_embeddings(tmp_path / "missing.safetensors")


def test_cli_embed(tmp_path, capsys):
    bank_path = small_bank_file(tmp_path)
    out = tmp_path / "emb.safetensors"
    code = main(["concepts", "embed", "--bank", str(bank_path), "--model", SMALL_MODEL, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0 and out.is_file()
    assert "randomly initialised" in captured.err and "3 concepts" in captured.out
    assert load_concept_embeddings(out, load_bank(bank_path)).embeddings.shape[0] == 3
    code = main(["concepts", "embed", "--bank", str(bank_path), "--model", "ViT-Nope-1", "--out", str(out)])
    assert code == 2 and "unknown open_clip model" in capsys.readouterr().err
