"""Layer indexing: timm's own grouping for timm models, module order otherwise."""

import pytest
import timm
from torch import nn

import lpwd


def depth_of(model, prefix):
    layers = lpwd.layer_indices(model)
    return {layers[n] for n in layers if n.startswith(prefix)}


def test_resnet18_stem_first_blocks_in_order_head_last():
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    layers = lpwd.layer_indices(model)
    assert set(layers) == {n for n, _ in model.named_parameters()}
    # stem, 8 basic blocks, head
    assert depth_of(model, "conv1.") == {(1, 10)} and depth_of(model, "bn1.") == {(1, 10)}
    blocks = [f"layer{s}.{b}." for s in range(1, 5) for b in range(2)]
    assert [depth_of(model, p) for p in blocks] == [{(i, 10)} for i in range(2, 10)]
    assert depth_of(model, "fc.") == {(10, 10)}


def test_convnext_atto_stages_and_blocks_in_order():
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=10)
    layers = lpwd.layer_indices(model)
    L = next(iter(layers.values()))[1]
    assert depth_of(model, "stem.") == {(1, L)}
    assert depth_of(model, "head.fc.") == {(L, L)}
    order = [layers[n][0] for n, _ in model.named_parameters()]
    assert order == sorted(order)  # depth never decreases from input to output
    assert depth_of(model, "stages.0.blocks.0.") != depth_of(model, "stages.0.blocks.1.")


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "swin_tiny_patch4_window7_224"])
def test_transformers_embed_first_head_last(name):
    model = timm.create_model(name, pretrained=False, num_classes=10)
    layers = lpwd.layer_indices(model)
    L = next(iter(layers.values()))[1]
    assert layers["patch_embed.proj.weight"] == (1, L)
    head = "head.weight" if name.startswith("vit") else "head.fc.weight"
    assert layers[head] == (L, L)
    if name.startswith("vit"):
        assert L == 12 + 2  # embeddings, 12 blocks, head
        assert [layers[f"blocks.{i}.attn.qkv.weight"][0] for i in range(12)] == list(range(2, 14))
    else:
        firsts = [layers[f"layers.{s}.blocks.0.attn.qkv.weight"][0] for s in range(4)]
        assert firsts == sorted(firsts) and len(set(firsts)) == 4


def test_plain_sequential_one_layer_per_weight_owning_module():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8, 2)
    )
    assert lpwd.layer_indices(model) == {
        "0.weight": (1, 3), "0.bias": (1, 3),
        "1.weight": (1, 3), "1.bias": (1, 3),  # a norm belongs to the layer before it
        "3.weight": (2, 3), "3.bias": (2, 3),
        "5.weight": (3, 3), "5.bias": (3, 3),
    }


def test_leading_norm_joins_first_layer():
    model = nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 4))
    assert lpwd.layer_indices(model) == {n: (1, 1) for n in ["0.weight", "0.bias", "1.weight", "1.bias"]}


def tiny_hf(kind):
    transformers = pytest.importorskip("transformers")
    if kind == "bert":
        return transformers.BertForSequenceClassification(transformers.BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=12, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=16, num_labels=2))
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=12, n_head=2,
                                                                n_positions=16, bos_token_id=0, eos_token_id=0))


def test_hugging_face_bert_embeddings_first_each_block_one_layer_head_last():
    model = tiny_hf("bert")
    layers = lpwd.layer_indices(model)
    assert set(layers) == {n for n, _ in model.named_parameters()}
    assert depth_of(model, "bert.embeddings.") == {(1, 14)}  # word, position and token-type: one layer
    assert [depth_of(model, f"bert.encoder.layer.{i}.") for i in range(12)] == [{(i, 14)} for i in range(2, 14)]
    assert depth_of(model, "bert.pooler.") == depth_of(model, "classifier.") == {(14, 14)}


def test_gpt2_tied_head_stays_with_the_input_embedding_and_the_final_norm_joins_the_last_block():
    model = tiny_hf("gpt2")
    assert model.lm_head.weight is model.transformer.wte.weight
    layers = lpwd.layer_indices(model)
    assert "lm_head.weight" not in layers  # the tied tensor appears once, at its first use
    assert layers["transformer.wte.weight"] == layers["transformer.wpe.weight"] == (1, 13)
    assert [depth_of(model, f"transformer.h.{i}.") for i in range(12)] == [{(i, 13)} for i in range(2, 14)]
    assert depth_of(model, "transformer.ln_f.") == {(13, 13)}
