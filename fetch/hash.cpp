#include "fetch/hash.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "common/error.h"
#include "common/fd.h"

namespace kaio::fetch {

struct Digest::Impl {
  struct CtxFree {
    void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
  };
  std::unique_ptr<EVP_MD_CTX, CtxFree> ctx{EVP_MD_CTX_new()};
};

namespace {
const EVP_MD* md_for(HashKind kind) {
  return kind == HashKind::sha1 ? EVP_sha1() : EVP_sha256();
}
}  // namespace

Digest::Digest(HashKind kind) : impl_(std::make_unique<Impl>()), kind_(kind) {
  if (!impl_->ctx || EVP_DigestInit_ex(impl_->ctx.get(), md_for(kind), nullptr) != 1)
    throw Error(ErrorKind::internal, "OpenSSL digest init failed");
}
Digest::~Digest() = default;
Digest::Digest(Digest&&) noexcept = default;
Digest& Digest::operator=(Digest&&) noexcept = default;

void Digest::update(const void* data, size_t size) {
  EVP_DigestUpdate(impl_->ctx.get(), data, size);
}

std::string Digest::hex() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(impl_->ctx.get(), out, &len);
  EVP_DigestInit_ex(impl_->ctx.get(), md_for(kind_), nullptr);
  static const char* digits = "0123456789abcdef";
  std::string hex;
  for (unsigned i = 0; i < len; ++i) {
    hex.push_back(digits[out[i] >> 4]);
    hex.push_back(digits[out[i] & 15]);
  }
  return hex;
}

std::string git_blob_header(uint64_t size) {
  std::string header = "blob " + std::to_string(size);
  header.push_back('\0');
  return header;
}

std::string hash_file(const std::filesystem::path& file, HashKind kind, bool git_blob) {
  kaio::Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw_errno("open for hashing", file.string());
  Digest digest(kind);
  if (git_blob) digest.update(git_blob_header(std::filesystem::file_size(file)));
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("read for hashing", file.string());
    if (n == 0) break;
    digest.update(buf.data(), static_cast<size_t>(n));
  }
  return digest.hex();
}

}  // namespace kaio::fetch
