"""The text encoder's prompt → (embeddings, mask) path against the byte tokenizer and BERT called by hand."""

import torch

from modeling_pyratok.text_encoder_pyratok import PyraTokTextEncoder, build_tiny_text_encoder


def test_prompts_are_tokenized_as_bytes_and_embedded_with_their_mask():
    model, tokenizer = build_tiny_text_encoder(8)
    encoder = PyraTokTextEncoder(model, tokenizer, max_length=8)
    embeds, mask = encoder(["ab", "a long prompt"], torch.device("cpu"))
    # byte ids shifted by 2 after a start token 1; the long prompt is cut at 8 tokens, the short one padded with 0
    ids = torch.tensor([[1, 99, 100, 0, 0, 0, 0, 0], [1, 99, 34, 110, 113, 112, 105, 34]])
    attention = torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0], [1] * 8])
    assert torch.equal(mask, attention.bool())
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=attention).last_hidden_state
    assert embeds.dtype == torch.float32 and torch.allclose(embeds, expected, atol=1e-6)
