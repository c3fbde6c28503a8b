#include "daemon/kaioctl/bitmap_font.h"

#include <algorithm>
#include <array>
#include <string>

#include "common/error.h"

namespace kaio::ctl {
namespace {

struct Glyph {
  char c;
  std::array<uint8_t, kGlyphHeight> rows;  // bit 4 is the leftmost column
};

constexpr std::array<Glyph, 15> kGlyphs = {{
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}},
    {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}},
    {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}},
    {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}},
    {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}},
    {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}},
    {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}},
    {'s', {0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E}},
    {'w', {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A}},
    {' ', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}},
}};

const Glyph& glyph(char c) {
  for (const auto& g : kGlyphs)
    if (g.c == c) return g;
  throw Error(ErrorKind::internal, "bitmap font: no glyph for '" + std::string(1, c) + "'");
}

void fill(RgbImage image, int x, int y, int side, const uint8_t (&colour)[3]) {
  for (int yy = std::max(y, 0); yy < std::min(y + side, image.height); ++yy) {
    for (int xx = std::max(x, 0); xx < std::min(x + side, image.width); ++xx) {
      uint8_t* p = image.pixels + (static_cast<size_t>(yy) * image.width + xx) * 3;
      p[0] = colour[0];
      p[1] = colour[1];
      p[2] = colour[2];
    }
  }
}

}  // namespace

int text_width(std::string_view text, int scale) {
  if (text.empty()) return 0;
  return (static_cast<int>(text.size()) * (kGlyphWidth + 1) - 1) * scale;
}

void draw_text(RgbImage image, int x, int y, std::string_view text, int scale, const uint8_t (&colour)[3]) {
  for (char c : text) {
    const Glyph& g = glyph(c);
    for (int row = 0; row < kGlyphHeight; ++row) {
      for (int col = 0; col < kGlyphWidth; ++col) {
        if (g.rows[row] & (0x10 >> col)) fill(image, x + col * scale, y + row * scale, scale, colour);
      }
    }
    x += (kGlyphWidth + 1) * scale;
  }
}

}  // namespace kaio::ctl
