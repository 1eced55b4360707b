"""Embedding baseline: masked mean of a chosen layer, unit norm, padding does not leak in."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trackstar_pipeline.attribution.examples import TokenizedExample
from trackstar_pipeline.evaluation.embedding import mean_hidden_states


def _model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32, pad_token_id=0)
    return LlamaForCausalLM(config).eval()


EXAMPLES = [TokenizedExample("a", (1, 5, 6, 7, 9), 1), TokenizedExample("b", (1, 4), 1),
            TokenizedExample("c", (1, 8, 8), 1)]


@pytest.mark.parametrize("layer", [0, 1, -1])
def test_matches_a_per_example_reference(layer):
    model = _model()
    batched = mean_hidden_states(model, EXAMPLES, layer=layer, batch_size=3)  # padded together
    assert batched.shape == (3, 16)
    for row, example in zip(batched, EXAMPLES):
        with torch.no_grad():
            states = model(input_ids=torch.tensor([example.input_ids]), output_hidden_states=True).hidden_states
        reference = torch.nn.functional.normalize(states[layer][0].mean(dim=0), dim=0)
        assert torch.allclose(row, reference, atol=1e-5)
    assert torch.allclose(batched.norm(dim=1), torch.ones(3))


def test_layer_out_of_range_names_the_setting():
    with pytest.raises(ValueError, match="embed_layer=7"):
        mean_hidden_states(_model(), EXAMPLES, layer=7)
