#pragma once
// `kaioctl probe FILE [--preview out.png] [--frames T --stride S --fps F --size N]`:
// lists the video members of an archive (or a single video), the windows each
// would give, and the errors; --preview writes a PNG contact sheet of the
// first window of the first good clip. Returns 0 when every member is fine,
// 1 when any member failed, 2 on bad usage.
namespace kaio::decode {

int run_probe_command(int argc, char** argv);

}  // namespace kaio::decode
