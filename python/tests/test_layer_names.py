"""How layer profiling names modules: a module reached by several paths is named by them."""

import sys

from conftest import PACKAGE_DIR

sys.path.insert(0, str(PACKAGE_DIR))

from vllm_profiler.layers import shared_name  # noqa: E402


def test_a_module_reached_by_one_path_is_named_by_it():
    assert shared_name(["model.layers.0.mlp"]) == "model.layers.0.mlp"
    assert shared_name([""]) == ""


def test_paths_of_one_length_are_named_with_stars_where_they_differ():
    paths = [f"model.layers.{i}.self_attn.rotary_emb" for i in range(32)]
    assert shared_name(paths) == "model.layers.*.self_attn.rotary_emb"
    assert shared_name(["a.x.b.y", "a.z.b.w"]) == "a.*.b.*"


def test_paths_of_other_lengths_are_named_by_the_parts_they_end_with():
    assert shared_name(["model.rotary_emb", "model.layers.0.attn.rotary_emb"]) == "*.rotary_emb"
    assert shared_name(["model.a", "model.layers.b"]) == "model.a", "nothing in common"
