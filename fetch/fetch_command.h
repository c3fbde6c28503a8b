#pragma once
// `kaioctl fetch`: downloads a dataset selection into a folder, resuming and
// verifying every file. Exit 0 ok, 1 failure, 2 usage.
namespace kaio::fetch {

int run_fetch_command(int argc, char** argv);

}  // namespace kaio::fetch
