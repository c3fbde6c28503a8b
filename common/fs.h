#pragma once
// Durable file operations: data counts as written only once it is fsync'ed and
// its directory entry is too.
#include <filesystem>
#include <string_view>

namespace kaio {

void fsync_path(const std::filesystem::path& path);  // a file or a directory
// Writes `data` to `path` via a temporary name, fsync, rename, fsync of the folder.
void write_file_durably(const std::filesystem::path& path, std::string_view data);
// Renames and fsyncs the destination folder.
void rename_durably(const std::filesystem::path& from, const std::filesystem::path& to);
// Bytes used on disk (allocated blocks) by everything under `dir`.
uint64_t disk_usage(const std::filesystem::path& dir);

}  // namespace kaio
