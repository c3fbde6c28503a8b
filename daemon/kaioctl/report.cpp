// `kaioctl report --out FILE [--state-dir DIR]`: the picture of a run, from
// the ledger's time series (state/run_series.h), read-only so that kaiod may
// be running. Four panels on one time axis: disk and reserved against the
// budget, the three rates (each against its own peak), the loss and its
// average, the data wait; paused and network-outage spans shaded, the time
// kaiod was not running hatched, restarts as vertical lines. FILE.svg is the
// SVG, FILE.html the SVG in a page. Returns 0 when written, 1 when the ledger
// cannot be read or holds fewer than 2 samples, 2 on bad usage.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/error.h"
#include "common/units.h"
#include "daemon/kaioctl/commands.h"
#include "state/ledger.h"
#include "state/run_series.h"

namespace kaio::ctl {
namespace {

namespace fs = std::filesystem;
using state::RunSample;
using state::SampleKind;

constexpr const char* kUsage = "usage: kaioctl report --out FILE.svg|FILE.html [--state-dir DIR]\n";

// Page geometry in SVG user units (pixels): plots left, legends right.
constexpr double kWidth = 1100, kPlotLeft = 90, kPlotRight = 840, kLegendLeft = 860;
constexpr double kFirstTop = 80, kPanelHeight = 150, kPanelGap = 45;
constexpr double kHeight = kFirstTop + 4 * kPanelHeight + 3 * kPanelGap + 75;

struct ReportArgs {
  fs::path out;
  fs::path state_dir = Config{}.storage.state_dir;
};

std::optional<ReportArgs> parse(const std::vector<std::string>& argv) {
  ReportArgs a;
  for (size_t i = 0; i < argv.size(); ++i) {
    bool has_value = i + 1 < argv.size();
    if (argv[i] == "--out" && has_value)
      a.out = argv[++i];
    else if (argv[i] == "--state-dir" && has_value)
      a.state_dir = argv[++i];
    else
      return std::nullopt;
  }
  if (a.out.empty()) return std::nullopt;
  return a;
}

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string local_time(int64_t t, const char* format) {
  auto tt = static_cast<std::time_t>(t);
  std::tm tm{};
  localtime_r(&tt, &tm);
  std::array<char, 64> buf{};
  std::strftime(buf.data(), buf.size(), format, &tm);
  return buf.data();
}

// Unix seconds to x.
struct TimeAxis {
  int64_t t0 = 0, t1 = 1;
  double x(int64_t t) const {
    return kPlotLeft + static_cast<double>(t - t0) / static_cast<double>(t1 - t0) * (kPlotRight - kPlotLeft);
  }
};

// One panel: its place on the page and the value range its y axis spans.
struct Panel {
  std::string id, title;
  double top = 0, bottom = 0, min = 0, max = 1;
  double y(double v) const { return bottom - (v - min) / (max - min) * (bottom - top); }
};

Panel panel_at(int index, std::string id, std::string title, double min, double max) {
  double top = kFirstTop + index * (kPanelHeight + kPanelGap);
  if (max <= min) max = min + 1;
  return {std::move(id), std::move(title), top, top + kPanelHeight, min, max};
}

// A round step giving about `ticks` ticks over `range`.
double nice_step(double range, int ticks) {
  double raw = range / ticks;
  double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0})
    if (m * magnitude >= raw) return m * magnitude;
  return 10 * magnitude;
}

// The first step, in seconds, that gives at most 8 time ticks over the span.
int64_t time_step(int64_t span) {
  for (int64_t step : {1,    2,    5,    10,    15,    30,    60,    120,    300,    600,    900,
                       1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800, 2592000})
    if (span / step <= 8) return step;
  return span / 8 + 1;
}

// ---------------------------------------------------------------- drawing

class Svg {
 public:
  Svg& operator<<(const std::string& s) {
    text_ += s;
    return *this;
  }
  void line(double x0, double y0, double x1, double y1, const std::string& style) {
    text_ += fmt::format(R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" {}/>)", x0, y0, x1, y1, style) + "\n";
  }
  void rect(double x, double y, double w, double h, const std::string& style) {
    text_ +=
        fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" {}/>)", x, y, w, h, style) + "\n";
  }
  void label(double x, double y, const std::string& text, const std::string& style = "") {
    text_ += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" {}>{}</text>)", x, y, style, xml_escape(text)) + "\n";
  }
  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

using Value = std::function<std::optional<double>(const RunSample&)>;

struct Series {
  std::string name, legend, color, dash;
  Value value;
};

// One series as polylines (broken where it has no value and at restarts), one
// point a sample.
void draw_series(Svg& svg, const TimeAxis& axis, const Panel& p, const std::vector<RunSample>& samples,
                 const Series& s) {
  std::string points;
  auto flush = [&] {
    if (points.empty()) return;
    svg << fmt::format(R"(<polyline class="series" data-series="{}" points="{}" fill="none" stroke="{}" )"
                       R"(stroke-width="1.6"{}/>)",
                       s.name, points, s.color, s.dash.empty() ? "" : " stroke-dasharray=\"" + s.dash + "\"") +
               "\n";
    points.clear();
  };
  for (const auto& sample : samples) {
    auto v = s.value(sample);
    if (sample.kind == SampleKind::start) flush();
    if (!v) {
      flush();
      continue;
    }
    if (!points.empty()) points += ' ';
    points += fmt::format("{:.1f},{:.1f}", axis.x(sample.t), p.y(*v));
  }
  flush();
}

void draw_legend(Svg& svg, const Panel& p, const std::vector<Series>& series) {
  double y = p.top + 12;
  for (const auto& s : series) {
    svg.line(kLegendLeft, y - 4, kLegendLeft + 22, y - 4,
             fmt::format(R"(stroke="{}" stroke-width="2"{})", s.color,
                         s.dash.empty() ? "" : " stroke-dasharray=\"" + s.dash + "\""));
    svg.label(kLegendLeft + 28, y, s.legend);
    y += 18;
  }
}

// The frame, the title, the y ticks (labelled by `format`) and the group's opening tag.
void open_panel(Svg& svg, const Panel& p, const std::function<std::string(double)>& format) {
  svg << fmt::format(R"(<g class="panel" id="panel-{}" data-top="{:.1f}" data-bottom="{:.1f}" data-min="{}" )"
                     R"(data-max="{}">)",
                     p.id, p.top, p.bottom, p.min, p.max) +
             "\n";
  svg.label(kPlotLeft, p.top - 8, p.title, R"(font-weight="bold")");
  double step = nice_step(p.max - p.min, 5);
  for (double v = std::ceil(p.min / step) * step; v <= p.max + step * 1e-9; v += step) {
    svg.line(kPlotLeft, p.y(v), kPlotRight, p.y(v), R"(stroke="#e4e4e4")");
    svg.label(kPlotLeft - 6, p.y(v) + 4, format(v), R"(text-anchor="end")");
  }
  svg.rect(kPlotLeft, p.top, kPlotRight - kPlotLeft, p.bottom - p.top, R"(fill="none" stroke="#888")");
}

// ---------------------------------------------------------------- spans and marks

enum class SpanKind { paused, outage, down };

struct Span {
  int64_t t0, t1;
  SpanKind kind;
};

// What each sample's state says until the next sample; the time before a
// restart's start row is the time kaiod was not running.
std::vector<Span> spans_of(const std::vector<RunSample>& samples) {
  std::vector<Span> out;
  for (size_t i = 0; i + 1 < samples.size(); ++i) {
    const auto& s = samples[i];
    std::optional<SpanKind> kind;
    if (samples[i + 1].kind == SampleKind::start)
      kind = SpanKind::down;
    else if (s.state == "paused")
      kind = SpanKind::paused;
    else if (s.state == "waiting-network" || s.state == "auth-required")
      kind = SpanKind::outage;
    if (!kind) continue;
    if (!out.empty() && out.back().kind == *kind && out.back().t1 == s.t)
      out.back().t1 = samples[i + 1].t;
    else
      out.push_back({s.t, samples[i + 1].t, *kind});
  }
  return out;
}

const char* span_style(SpanKind k) {
  switch (k) {
    case SpanKind::paused:
      return R"(fill="#9e9e9e" fill-opacity="0.30")";
    case SpanKind::outage:
      return R"(fill="#ff9800" fill-opacity="0.30")";
    case SpanKind::down:
      return R"svg(fill="url(#down)")svg";
  }
  return "";
}

const char* span_name(SpanKind k) {
  switch (k) {
    case SpanKind::paused:
      return "paused";
    case SpanKind::outage:
      return "outage";
    case SpanKind::down:
      return "down";
  }
  return "";
}

void draw_spans(Svg& svg, const TimeAxis& axis, const Panel& p, const std::vector<Span>& spans) {
  for (const auto& s : spans) {
    double x0 = axis.x(s.t0), x1 = axis.x(s.t1);
    svg.rect(x0, p.top, std::max(1.0, x1 - x0), p.bottom - p.top,
             fmt::format(R"(class="band" data-band="{}" {})", span_name(s.kind), span_style(s.kind)));
  }
}

// A vertical line through the four panels (not their titles) at `x`.
void through_panels(Svg& svg, double x, const std::string& style) {
  for (int i = 0; i < 4; ++i) {
    double top = kFirstTop + i * (kPanelHeight + kPanelGap);
    svg.line(x, top, x, top + kPanelHeight, style);
  }
}

void draw_restarts(Svg& svg, const TimeAxis& axis, const std::vector<RunSample>& samples) {
  for (size_t i = 1; i < samples.size(); ++i) {
    if (samples[i].kind != SampleKind::start) continue;
    through_panels(svg, axis.x(samples[i].t),
                   R"(class="restart" stroke="#d32f2f" stroke-width="1.5" stroke-dasharray="5 3")");
  }
}

void draw_time_axis(Svg& svg, const TimeAxis& axis, double bottom) {
  int64_t span = axis.t1 - axis.t0;
  int64_t step = time_step(span);
  const char* format = step < 60 ? "%H:%M:%S" : span >= 86400 ? "%m-%d %H:%M" : "%H:%M";
  for (int64_t t = (axis.t0 + step - 1) / step * step; t <= axis.t1; t += step) {
    double x = axis.x(t);
    through_panels(svg, x, R"(stroke="#eeeeee")");
    svg.line(x, bottom, x, bottom + 5, R"(stroke="#888")");
    svg.label(x, bottom + 18, local_time(t, format), R"(text-anchor="middle")");
  }
  svg.label((kPlotLeft + kPlotRight) / 2, bottom + 38,
            "local time (" + local_time(axis.t0, "%Y-%m-%d %Z") + "), " + format_duration(std::chrono::seconds(span)),
            R"(text-anchor="middle")");
}

void draw_marks_legend(Svg& svg, double y) {
  struct Mark {
    SpanKind kind;
    const char* text;
  };
  for (const auto& m : {Mark{SpanKind::paused, "paused"}, Mark{SpanKind::outage, "waiting for the network"},
                        Mark{SpanKind::down, "kaiod not running"}}) {
    svg.rect(kLegendLeft, y - 10, 22, 12, span_style(m.kind));
    svg.label(kLegendLeft + 28, y, m.text);
    y += 18;
  }
  svg.line(kLegendLeft + 11, y - 12, kLegendLeft + 11, y + 2, R"(stroke="#d32f2f" stroke-width="1.5")");
  svg.label(kLegendLeft + 28, y, "restart");
}

// ---------------------------------------------------------------- the panels

double max_of(const std::vector<RunSample>& samples, const Value& value) {
  double m = 0;
  for (const auto& s : samples)
    if (auto v = value(s)) m = std::max(m, *v);
  return m;
}

void disk_panel(Svg& svg, const TimeAxis& axis, const std::vector<RunSample>& samples, const std::vector<Span>& spans) {
  std::vector<Series> series = {
      {"disk", "disk (cache + state)", "#1565c0", "", [](const RunSample& s) { return double(s.disk_bytes); }},
      {"reserved", "reserved", "#2e7d32", "", [](const RunSample& s) { return double(s.reserved_bytes); }},
      {"budget", "storage.budget", "#d32f2f", "6 3", [](const RunSample& s) { return double(s.budget_bytes); }},
  };
  double top = 0;
  for (const auto& s : series) top = std::max(top, max_of(samples, s.value));
  Panel p = panel_at(0, "disk", "Disk against the budget", 0, top * 1.1);
  open_panel(svg, p, [](double v) { return format_size(static_cast<uint64_t>(v)); });
  draw_spans(svg, axis, p, spans);
  for (const auto& s : series) draw_series(svg, axis, p, samples, s);
  draw_legend(svg, p, series);
  svg << "</g>\n";
}

// Three units on one axis: each rate is drawn against its own peak, named in the legend.
void rates_panel(Svg& svg, const TimeAxis& axis, const std::vector<RunSample>& samples,
                 const std::vector<Span>& spans) {
  struct Rate {
    const char* name;
    const char* unit;
    const char* color;
    double scale;  // to the unit
    double RunSample::*field;
  };
  const std::array<Rate, 3> rates{{
      {"download", "MB/s", "#1565c0", 1e-6, &RunSample::download_bytes_per_s},
      {"decode", "clips/s", "#ef6c00", 1, &RunSample::decode_clips_per_s},
      {"train", "samples/s", "#6a1b9a", 1, &RunSample::train_samples_per_s},
  }};
  Panel p = panel_at(1, "rates", "Rates, each against its own peak", 0, 100);
  open_panel(svg, p, [](double v) { return fmt::format("{:.0f}%", v); });
  draw_spans(svg, axis, p, spans);
  std::vector<Series> series;
  for (const auto& r : rates) {
    double peak = 0;
    for (const auto& s : samples) peak = std::max(peak, s.*(r.field));
    Value share = [peak, field = r.field](const RunSample& s) { return peak > 0 ? 100 * s.*field / peak : 0.0; };
    series.push_back({r.name, fmt::format("{} {} (peak {:.3g})", r.name, r.unit, peak * r.scale), r.color, "", share});
  }
  for (const auto& s : series) draw_series(svg, axis, p, samples, s);
  draw_legend(svg, p, series);
  svg << "</g>\n";
}

void loss_panel(Svg& svg, const TimeAxis& axis, const std::vector<RunSample>& samples, const std::vector<Span>& spans) {
  std::vector<Series> series = {
      {"loss", "loss", "#9e9e9e", "", [](const RunSample& s) { return s.loss; }},
      {"loss_avg", "loss, average of ~50 steps", "#c62828", "", [](const RunSample& s) { return s.loss_avg; }},
  };
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& s : samples) {
    for (const auto& v : {s.loss, s.loss_avg}) {
      if (!v) continue;
      lo = std::min(lo, *v);
      hi = std::max(hi, *v);
    }
  }
  bool any = lo <= hi;
  double pad = any ? std::max((hi - lo) * 0.08, std::abs(hi) * 0.01 + 1e-9) : 0;
  Panel p = panel_at(2, "loss", "Loss", any ? std::max(0.0, lo - pad) : 0, any ? hi + pad : 1);
  open_panel(svg, p, [](double v) { return fmt::format("{:.3g}", v); });
  draw_spans(svg, axis, p, spans);
  if (!any)
    svg.label((kPlotLeft + kPlotRight) / 2, (p.top + p.bottom) / 2,
              "no loss recorded (no step yet, or train.backend \"external\")", R"(text-anchor="middle")");
  for (const auto& s : series) draw_series(svg, axis, p, samples, s);
  draw_legend(svg, p, series);
  svg << "</g>\n";
}

void wait_panel(Svg& svg, const TimeAxis& axis, const std::vector<RunSample>& samples, const std::vector<Span>& spans) {
  std::vector<Series> series = {
      {"data_wait", "trainer waiting for data", "#00838f", "", [](const RunSample& s) { return 100 * s.data_wait; }},
  };
  Panel p = panel_at(3, "wait", "Data wait, share of the trainer's time", 0, 100);
  open_panel(svg, p, [](double v) { return fmt::format("{:.0f}%", v); });
  draw_spans(svg, axis, p, spans);
  for (const auto& s : series) draw_series(svg, axis, p, samples, s);
  draw_legend(svg, p, series);
  svg << "</g>\n";
}

// Two lines: when, and what it came to.
std::array<std::string, 2> title_of(const std::vector<RunSample>& samples) {
  auto restarts =
      std::count_if(samples.begin() + 1, samples.end(), [](const RunSample& s) { return s.kind == SampleKind::start; });
  uint64_t peak = 0;
  for (const auto& s : samples) peak = std::max(peak, s.disk_bytes);
  int64_t span = samples.back().t - samples.front().t;
  return {fmt::format("kaiod run from {} to {} ({})", local_time(samples.front().t, "%Y-%m-%d %H:%M:%S"),
                      local_time(samples.back().t, "%Y-%m-%d %H:%M:%S"), format_duration(std::chrono::seconds(span))),
          fmt::format("{} samples, {} restart{}, peak disk {} (budget {} at the end)", samples.size(), restarts,
                      restarts == 1 ? "" : "s", format_size(peak), format_size(samples.back().budget_bytes))};
}

std::string draw(const std::vector<RunSample>& samples) {
  TimeAxis axis{samples.front().t, std::max(samples.back().t, samples.front().t + 1)};
  auto spans = spans_of(samples);
  double bottom = kFirstTop + 4 * kPanelHeight + 3 * kPanelGap;
  Svg svg;
  svg << fmt::format(R"(<svg xmlns="http://www.w3.org/2000/svg" width="{0:.0f}" height="{1:.0f}" )"
                     R"(viewBox="0 0 {0:.0f} {1:.0f}" font-family="sans-serif" font-size="12">)",
                     kWidth, kHeight) +
             "\n";
  svg << R"(<defs><pattern id="down" width="8" height="8" patternUnits="userSpaceOnUse" )"
         R"svg(patternTransform="rotate(45)"><rect width="8" height="8" fill="#eceff1"/>)svg"
         R"(<line x1="0" y1="0" x2="0" y2="8" stroke="#90a4ae" stroke-width="3"/></pattern></defs>)"
         "\n";
  svg.rect(0, 0, kWidth, kHeight, R"(fill="white")");
  auto title = title_of(samples);
  svg.label(kPlotLeft, 24, title[0], R"(font-size="15" font-weight="bold")");
  svg.label(kPlotLeft, 44, title[1], R"(font-size="13")");
  draw_time_axis(svg, axis, bottom);  // its grid under the panels
  disk_panel(svg, axis, samples, spans);
  rates_panel(svg, axis, samples, spans);
  loss_panel(svg, axis, samples, spans);
  wait_panel(svg, axis, samples, spans);
  draw_restarts(svg, axis, samples);
  draw_marks_legend(svg, bottom - kPanelHeight + 80);
  svg << "</svg>\n";
  return svg.text();
}

}  // namespace

int report_command(const Invocation& in) {
  auto args = parse(in.args);
  if (!args) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  std::string ext = args->out.extension().string();
  if (ext != ".svg" && ext != ".html") {
    std::fprintf(stderr, "kaioctl report: cannot write %s: the picture is .svg or .html (not \"%s\")%s\n%s",
                 args->out.c_str(), ext.c_str(),
                 ext == ".png" ? "; for a PNG, convert the SVG (rsvg-convert -o run.png run.svg)" : "", kUsage);
    return 2;
  }
  fs::path db = args->state_dir / state::Ledger::kDbName;
  std::vector<RunSample> samples;
  try {
    samples = state::run_series::read(db);
  } catch (const Error& e) {
    std::fprintf(stderr, "kaioctl report: %s\n", e.what());
    return 1;
  }
  if (samples.size() < 2) {
    std::fprintf(stderr,
                 "kaioctl report: the ledger %s holds %zu sample%s of the run; a picture needs 2 (kaiod writes one "
                 "at start, one a minute, one per checkpoint and one at a clean stop)\n",
                 db.c_str(), samples.size(), samples.size() == 1 ? "" : "s");
    return 1;
  }
  std::string svg = draw(samples);
  std::ofstream out(args->out, std::ios::binary | std::ios::trunc);
  if (ext == ".html")
    out << "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>kaiod run</title></head><body>\n"
        << svg << "</body></html>\n";
  else
    out << svg;
  out.close();
  if (!out) {
    std::fprintf(stderr, "kaioctl report: cannot write %s\n", args->out.c_str());
    return 1;
  }
  std::printf("%s: %zu samples, %s to %s\n", args->out.c_str(), samples.size(),
              local_time(samples.front().t, "%Y-%m-%d %H:%M:%S").c_str(),
              local_time(samples.back().t, "%Y-%m-%d %H:%M:%S").c_str());
  return 0;
}

}  // namespace kaio::ctl
