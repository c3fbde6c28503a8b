#pragma once
// Builds test archives with libarchive's writer, hostile entries included.
#include <archive.h>
#include <archive_entry.h>
#include <sys/sysmacros.h>

#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace kaio::decode::testing {

enum class Format { tar, tar_gz, zip };

struct Entry {
  Entry(std::string name_, std::string data_ = "", mode_t type_ = AE_IFREG, std::string link_ = "",
        std::string hardlink_ = "", size_t zeros_ = 0)
      : name(std::move(name_)),
        data(std::move(data_)),
        type(type_),
        link(std::move(link_)),
        hardlink(std::move(hardlink_)),
        zeros(zeros_) {}
  std::string name;
  std::string data;        // for regular files
  mode_t type = AE_IFREG;  // AE_IFREG, AE_IFLNK, AE_IFCHR, AE_IFIFO, AE_IFDIR
  std::string link;        // symlink target
  std::string hardlink;    // hard link target (an earlier entry)
  size_t zeros = 0;        // appended zero bytes (bombs), written in chunks
};

inline void write_archive(const std::filesystem::path& path, Format format, const std::vector<Entry>& entries) {
  std::unique_ptr<archive, int (*)(archive*)> a(archive_write_new(), archive_write_free);
  if (format == Format::zip) {
    archive_write_set_format_zip(a.get());
  } else {
    archive_write_set_format_pax_restricted(a.get());
    if (format == Format::tar_gz) archive_write_add_filter_gzip(a.get());
  }
  if (archive_write_open_filename(a.get(), path.c_str()) != ARCHIVE_OK)
    throw std::runtime_error("open " + path.string());
  for (const auto& e : entries) {
    std::unique_ptr<archive_entry, void (*)(archive_entry*)> en(archive_entry_new(), archive_entry_free);
    archive_entry_set_pathname(en.get(), e.name.c_str());
    archive_entry_set_perm(en.get(), 0644);
    if (!e.hardlink.empty()) {
      archive_entry_set_filetype(en.get(), AE_IFREG);
      archive_entry_set_hardlink(en.get(), e.hardlink.c_str());
      archive_entry_set_size(en.get(), 0);
    } else {
      archive_entry_set_filetype(en.get(), e.type);
      if (e.type == AE_IFLNK) archive_entry_set_symlink(en.get(), e.link.c_str());
      if (e.type == AE_IFCHR) archive_entry_set_rdev(en.get(), makedev(1, 3));
      archive_entry_set_size(en.get(), e.type == AE_IFREG ? static_cast<la_int64_t>(e.data.size() + e.zeros) : 0);
    }
    if (archive_write_header(a.get(), en.get()) < ARCHIVE_WARN) {
      throw std::runtime_error("header " + e.name + ": " + archive_error_string(a.get()));
    }
    if (e.type == AE_IFREG && e.hardlink.empty()) {
      archive_write_data(a.get(), e.data.data(), e.data.size());
      std::string chunk(1 << 20, '\0');
      for (size_t left = e.zeros; left > 0;) {
        size_t n = std::min(left, chunk.size());
        archive_write_data(a.get(), chunk.data(), n);
        left -= n;
      }
    }
  }
  archive_write_close(a.get());
}

}  // namespace kaio::decode::testing
