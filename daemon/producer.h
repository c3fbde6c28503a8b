#pragma once
// The producer thread: the caption files first, then each epoch's files in
// plan order, one FileRun at a time, with the next files prefetched while
// one decodes. It owns the captions (read before the first file, then only
// read); everything it hands on goes through the core.
#include <cstddef>
#include <stop_token>

#include "daemon/downloads.h"
#include "daemon/engine_core.h"
#include "decode/captions.h"

namespace kaio::daemon {

class Producer {
 public:
  Producer(EngineCore& core, Downloads& downloads) : core_(core), downloads_(downloads) {}
  void run(const std::stop_token& st);

 private:
  void load_caption_files();
  void produce_epoch(int e, const std::stop_token& st);

  EngineCore& core_;
  Downloads& downloads_;
  decode::CaptionMap captions_;  // source.captions
};

}  // namespace kaio::daemon
