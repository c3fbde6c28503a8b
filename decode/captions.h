#pragma once
// Captions from LLaVA-Video-178K files ({subset}_cap_processed.json): a JSON
// array of {"id", "video", "conversations": [{"from", "value"}], "data_source"}.
// Parsed as a stream (SAX), so a file of tens of MB never becomes a DOM.
#include <filesystem>
#include <istream>
#include <string>
#include <unordered_map>

namespace kaio::decode {

// video path (as written in the file, e.g. "academic_source/Charades/X.mp4")
// -> the first "gpt" answer of its conversation.
class CaptionMap {
 public:
  void add(std::string video, std::string caption);
  // Looks up a member path; also tries it without a leading "./" and, failing
  // that, an entry with the same file name (archives may drop a folder prefix).
  const std::string* find(const std::string& member) const;
  size_t size() const { return by_video_.size(); }
  // Takes the entries of `other`; an entry already here is kept.
  void merge(CaptionMap&& other);

 private:
  std::unordered_map<std::string, std::string> by_video_;
  std::unordered_map<std::string, std::string> video_by_filename_;
};

// Throws Error(corrupt) naming `name` and the byte offset on malformed JSON.
CaptionMap parse_captions(std::istream& in, const std::string& name);
CaptionMap load_captions(const std::filesystem::path& file);

}  // namespace kaio::decode
