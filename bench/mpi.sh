#!/usr/bin/env bash
# Data-parallel scaling on the cpu backend: the trainer's step under
# `mpirun -np 1` and `-np 2` (1 thread per rank), samples/s per rank and the
# all-reduce's share of the step (docs/multi-rank.md).
# Usage: bench/mpi.sh BUILD_DIR   -> bench/results/mpi.json
set -euo pipefail
build="${1:-build-release}"
cd "$(dirname "$0")/.."
bin="$build/bench/train/kaio_mpi_scaling_bench"
mkdir -p bench/results
if ! command -v mpirun >/dev/null; then
  echo "skipped: no mpirun"
  echo "[]" > bench/results/mpi.json
  exit 0
fi
[ -x "$bin" ] || cmake --build "$build" --target kaio_mpi_scaling_bench >/dev/null
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi=(mpirun --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo)
# model frames size batch steps
read -r model frames size batch steps <<<"${KAIO_BENCH_MPI_CASE:-tiny 8 64 4 10}"
one=$("${mpi[@]}" -np 1 "$bin" "$model" "$frames" "$size" "$batch" "$steps" 1)
two=$("${mpi[@]}" -np 2 "$bin" "$model" "$frames" "$size" "$batch" "$steps" 1)
sps1=$(field "$one" samples_per_s_per_rank); sps2=$(field "$two" samples_per_s_per_rank)
share2=$(field "$two" allreduce_share)
ratio=$(python3 -c "print(round($sps2 / $sps1, 3))")
echo "mpi_samples_per_s_per_rank: 2 ranks $sps2, 1 rank $sps1, ratio $ratio ($model, batch $batch per rank, window ${frames}x${size}, 1 thread per rank, $(nproc) cores)"
echo "mpi_allreduce_share: $share2 of the 2-rank step"
echo "[{\"name\":\"mpi_samples_per_s_per_rank\",\"kaio\":$sps2,\"peer\":$sps1,\"ratio\":$ratio,\"goal\":0.9},{\"name\":\"mpi_allreduce_share\",\"kaio\":$share2,\"peer\":null,\"ratio\":null,\"goal\":null}]" > bench/results/mpi.json
