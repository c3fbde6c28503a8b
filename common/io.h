#pragma once
// Interfaces that let stages meet without depending on each other:
// fetch/ produces a ByteSource, decode/ consumes one; cache/ implements
// SpaceReserver, and fetch/ and decode/ take one to claim disk before writing.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace kaio {

// A pull stream of bytes: a finished file, or a download still in progress.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Fills up to out.size() bytes; returns 0 only at the end of the stream.
  // Blocks for at most the source's own bound; throws kaio::Error on failure.
  virtual size_t read(std::span<std::byte> out) = 0;
  // A name for messages: the file or the URL path (never a token).
  virtual std::string describe() const = 0;
};

// Disk space held for one piece of work; released when destroyed.
class SpaceClaim {
 public:
  virtual ~SpaceClaim() = default;
  virtual uint64_t bytes() const = 0;
  // Trues the claim up or down once the real size is known. Growing may wait
  // for space like a new reservation; it throws kaio::Error(budget) if it can never fit.
  virtual void resize(uint64_t bytes) = 0;
};

class SpaceReserver {
 public:
  virtual ~SpaceReserver() = default;
  // Waits until `bytes` fit under the budget, then holds them. `what` names
  // the work for status ("download foo.tar.gz"). Throws kaio::Error(budget)
  // if it can never fit, kaio::Error(cancelled) if the service is stopping.
  virtual std::unique_ptr<SpaceClaim> reserve(uint64_t bytes, const std::string& what) = 0;
  // Never waits: nullptr unless the bytes fit now and nobody is queued.
  virtual std::unique_ptr<SpaceClaim> try_reserve(uint64_t bytes, const std::string& what) = 0;
  // What a file of `file_bytes` counts against the budget (whole blocks).
  virtual uint64_t on_disk_bytes(uint64_t file_bytes) const { return file_bytes; }
};

}  // namespace kaio
