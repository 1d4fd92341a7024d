"""Zero-shot heads: values against a by-hand computation, normalisation, and the memory/disk cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import tiny_task, tiny_zoo
from wemoe.tasks import heads
from wemoe.tasks.heads import HeadCache, build_head


@pytest.fixture(scope="module")
def zoo():
    return tiny_zoo(n_experts=1, seed=0)


def test_head_matches_by_hand_and_rows_have_norm_logit_scale(zoo):
    task = tiny_task(n_classes=4)
    head = build_head(zoo.clip, zoo.tokenizer, task)
    assert head.shape == (4, 32)
    scale = zoo.clip.logit_scale.exp().item()
    assert torch.allclose(head.norm(dim=-1), torch.full((4,), scale), rtol=1e-5)
    with torch.no_grad():
        for i, classname in enumerate(task.classnames):
            text = F.normalize(zoo.clip.encode_text(zoo.tokenizer(task.prompts(classname))), dim=-1)
            expected = F.normalize(text.mean(0), dim=-1) * scale
            assert torch.allclose(head[i], expected, atol=1e-5)


def test_cache_hits_in_memory_then_on_disk(zoo, tmp_path, monkeypatch):
    task = tiny_task(n_classes=3)
    cache = HeadCache(zoo.clip, zoo.tokenizer, cache_dir=tmp_path)
    first = cache.get(task)
    assert (cache.hits, cache.misses) == (0, 1) and cache.path(task).is_file()
    second = cache.get(task)
    assert (cache.hits, cache.misses) == (1, 1) and torch.equal(first, second)

    def no_build(*args, **kwargs):
        raise AssertionError("a fresh cache should read the head from disk, not rebuild it")

    monkeypatch.setattr(heads, "build_head", no_build)
    fresh = HeadCache(zoo.clip, zoo.tokenizer, cache_dir=tmp_path)
    assert torch.equal(fresh.get(task), first)
    assert (fresh.hits, fresh.misses) == (1, 0)


def test_cache_key_depends_on_text_weights_and_task(zoo, tmp_path):
    task = tiny_task(n_classes=3)
    other_model = tiny_zoo(n_experts=1, seed=1)
    a = HeadCache(zoo.clip, zoo.tokenizer, cache_dir=tmp_path)
    b = HeadCache(other_model.clip, other_model.tokenizer, cache_dir=tmp_path)
    assert a.fingerprint != b.fingerprint
    assert not torch.equal(a.get(task), b.get(task))
    assert b.misses == 1
    renamed = tiny_task(n_classes=2)
    assert a.path(renamed) != a.path(task)
    assert a.get(renamed).shape == (2, 32)


def test_image_weights_do_not_change_the_fingerprint(zoo):
    clip = zoo.clip
    before = heads.text_fingerprint(clip)
    with torch.no_grad():
        clip.visual.proj.add_(1.0)
    try:
        assert heads.text_fingerprint(clip) == before
    finally:
        with torch.no_grad():
            clip.visual.proj.sub_(1.0)


def test_prompts_cut_after_their_last_end_of_text_token_encode_as_whole_ones(zoo):
    prompts = ["a", "a photo of a very small striped red and white sailing boat on the sea", "a photo of a cat."]
    tokens = zoo.tokenizer(prompts)
    seen = []
    hook = zoo.clip.transformer.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[1]))
    try:
        with torch.no_grad():
            trimmed = heads.encode_prompts(zoo.clip, tokens)
            whole = zoo.clip.encode_text(tokens)
    finally:
        hook.remove()
    assert seen[0] == int(tokens.argmax(-1).max()) + 1 < tokens.shape[1] == seen[1]  # it did run fewer columns
    torch.testing.assert_close(trimmed, whole, rtol=1e-5, atol=1e-5)


def test_batches_that_cross_classes_give_the_same_head(zoo):
    task = tiny_task(n_classes=5)
    one_batch = build_head(zoo.clip, zoo.tokenizer, task)
    torch.testing.assert_close(build_head(zoo.clip, zoo.tokenizer, task, batch=3), one_batch, rtol=1e-5, atol=1e-5)


def test_a_text_tower_of_another_kind_runs_whole(zoo):
    class Wrapped(torch.nn.Module):  # not open_clip's CLIP: its encode_text is its own
        def __init__(self, clip):
            super().__init__()
            self.clip = clip

        def encode_text(self, tokens):
            return self.clip.encode_text(tokens) * 2

    tokens = zoo.tokenizer(["a photo of a cat."])
    with torch.no_grad():
        torch.testing.assert_close(heads.encode_prompts(Wrapped(zoo.clip), tokens), 2 * zoo.clip.encode_text(tokens))
