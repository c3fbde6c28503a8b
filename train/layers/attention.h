#pragma once
// Multi-head self-attention core (no projections): qkv is [batch, tokens, 3*dim]
// holding q, k, v side by side, head h at columns h*head_dim of each; out is
// [batch, tokens, dim]. probs [batch, heads, tokens, tokens] keeps the softmax
// for the backward pass. Scale is 1/sqrt(head_dim).
namespace kaio::train::cpu {

struct AttentionShape {
  int batch, tokens, heads, head_dim;
  int dim() const { return heads * head_dim; }
};

void attention_forward(float* out, float* probs, const float* qkv, const AttentionShape& s);
// dqkv is overwritten; dprobs is scratch of the size of probs.
void attention_backward(float* dqkv, float* dprobs, const float* dout, const float* qkv, const float* probs,
                        const AttentionShape& s);

}  // namespace kaio::train::cpu
