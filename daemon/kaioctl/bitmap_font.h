#pragma once
// A 5x7 bitmap font for labelling kaioctl probe's contact sheets: digits, '.',
// ':', 's', 'w' and space, all the labels need (no font library for a few
// dozen glyphs).
#include <cstdint>
#include <string_view>

namespace kaio::ctl {

inline constexpr int kGlyphWidth = 5;
inline constexpr int kGlyphHeight = 7;

// Pixels `text` spans at `scale` (one blank column between glyphs, none after the last).
int text_width(std::string_view text, int scale);

// An RGB image, rows packed, that text is drawn into.
struct RgbImage {
  uint8_t* pixels;
  int width, height;
};

// Draws `text` in `colour` with its top left at (x, y), each font pixel a
// scale x scale square; what falls outside the image is clipped. Throws
// Error(internal) for a character the font lacks.
void draw_text(RgbImage image, int x, int y, std::string_view text, int scale, const uint8_t (&colour)[3]);

}  // namespace kaio::ctl
