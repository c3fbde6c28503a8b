#pragma once
// For tests: reach the model behind a Trainer (to load reference weights and
// read gradients). Not part of the public API.
#include "train/model.h"
#include "train/trainer.h"

namespace kaio::train {

class TrainerInternals {
 public:
  virtual Model& model() = 0;

 protected:
  ~TrainerInternals() = default;
};

TrainerInternals& internals(Trainer& trainer);

}  // namespace kaio::train
