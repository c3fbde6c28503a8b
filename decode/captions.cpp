#include "decode/captions.h"

#include <spdlog/spdlog.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"

namespace kaio::decode {
namespace {

using json = nlohmann::json;

// Tracks only what it needs: depth, the last key, and the fields of the
// current record and of the current conversation turn.
class CaptionHandler : public nlohmann::json_sax<json> {
 public:
  explicit CaptionHandler(CaptionMap& out) : out_(out) {}

  bool null() override { return value({}); }
  bool boolean(bool) override { return value({}); }
  bool number_integer(number_integer_t) override { return value({}); }
  bool number_unsigned(number_unsigned_t) override { return value({}); }
  bool number_float(number_float_t, const string_t&) override { return value({}); }
  bool binary(binary_t&) override { return value({}); }
  bool string(string_t& s) override { return value(s); }

  bool start_object(std::size_t) override {
    ++depth_;
    if (depth_ == 2) record_ = {};
    if (depth_ == 4 && in_conversations_) turn_ = {};
    return true;
  }
  bool end_object() override {
    if (depth_ == 4 && in_conversations_ && turn_.from == "gpt" && record_.caption.empty()) {
      record_.caption = std::move(turn_.value);
    }
    if (depth_ == 2 && !record_.video.empty()) out_.add(std::move(record_.video), std::move(record_.caption));
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override {
    ++depth_;
    if (depth_ == 3 && key_ == "conversations") in_conversations_ = true;
    return true;
  }
  bool end_array() override {
    if (depth_ == 3) in_conversations_ = false;
    --depth_;
    return true;
  }
  bool key(string_t& k) override {
    key_ = k;
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) override {
    error_ = "at byte " + std::to_string(position) + ": " + e.what();
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  bool value(const std::string& s) {
    if (depth_ == 2 && key_ == "video") record_.video = s;
    if (depth_ == 4 && in_conversations_) {
      if (key_ == "from") turn_.from = s;
      if (key_ == "value") turn_.value = s;
    }
    return true;
  }

  struct Record {
    std::string video, caption;
  };
  struct Turn {
    std::string from, value;
  };

  CaptionMap& out_;
  int depth_ = 0;
  bool in_conversations_ = false;
  std::string key_;
  Record record_;
  Turn turn_;
  std::string error_;
};

}  // namespace

void CaptionMap::add(std::string video, std::string caption) {
  video_by_filename_[std::filesystem::path(video).filename().string()] = video;
  by_video_[std::move(video)] = std::move(caption);
}

void CaptionMap::merge(CaptionMap&& other) {
  by_video_.merge(other.by_video_);
  video_by_filename_.merge(other.video_by_filename_);
}

const std::string* CaptionMap::find(const std::string& member) const {
  std::string_view m = member;
  if (m.starts_with("./")) m.remove_prefix(2);
  if (auto it = by_video_.find(std::string(m)); it != by_video_.end()) return &it->second;
  auto alias = video_by_filename_.find(std::filesystem::path(m).filename().string());
  if (alias == video_by_filename_.end()) return nullptr;
  return &by_video_.at(alias->second);
}

CaptionMap parse_captions(std::istream& in, const std::string& name) {
  CaptionMap map;
  CaptionHandler handler(map);
  bool ok = json::sax_parse(in, &handler, json::input_format_t::json, true);
  if (!ok) throw Error(ErrorKind::corrupt, "captions " + name + ": malformed JSON " + handler.error());
  spdlog::info("captions {}: {} videos", name, map.size());
  return map;
}

CaptionMap load_captions(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorKind::io, "captions " + file.string() + ": cannot open");
  return parse_captions(in, file.string());
}

}  // namespace kaio::decode
