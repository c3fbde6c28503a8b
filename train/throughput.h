#pragma once
// How fast the trainer steps and how much of the device that is: model FLOPs
// of a step from the model's shapes, and the device's dense peak from a table
// (docs/training.md, "Step time, tokens/s and MFU").
#include <string_view>

#include "train/model.h"

namespace kaio::train {

// FLOPs (2 per multiply-add) of every matrix product in one forward and
// backward pass on `batch` windows: the linear layers and attention's two
// batched products, backward twice forward, except that the patch embedding
// computes no input gradient (its input is the data). Elementwise work,
// normalisation, softmax and the optimizer are not counted.
double step_flops(const ModelSpec& spec, const TubeletGrid& grid, int batch);

// Dense matrix-product peak in FLOP/s of the device named `device` (as its
// runtime reports it) for bf16 or fp32 operands; 0 when the table does not
// know the device (MFU is then unknown).
double peak_flops(std::string_view device, bool bf16);

}  // namespace kaio::train
