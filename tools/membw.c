/* Read bandwidth of this machine, the way llama.cpp's decode uses memory: all threads streaming
 * through a buffer far larger than the caches. Prints GB/s (1e9 bytes/s), best of N passes. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  size_t bytes = (argc > 1 ? strtoull(argv[1], 0, 10) : 1024) << 20;
  int passes = argc > 2 ? atoi(argv[2]) : 5;
  size_t n = bytes / sizeof(uint64_t);
  uint64_t *data = aligned_alloc(64, n * sizeof(uint64_t));
  if (!data) return 1;
#pragma omp parallel for
  for (size_t i = 0; i < n; i++) data[i] = i;
  double best = 0;
  uint64_t sink = 0;
  for (int p = 0; p < passes; p++) {
    double start = omp_get_wtime();
    uint64_t sum = 0;
#pragma omp parallel for reduction(+ : sum)
    for (size_t i = 0; i < n; i++) sum += data[i];
    double seconds = omp_get_wtime() - start;
    sink += sum;
    double rate = (double)(n * sizeof(uint64_t)) / seconds / 1e9;
    if (rate > best) best = rate;
  }
  printf("%.2f\n", best);
  return sink == 42 ? 2 : 0;
}
