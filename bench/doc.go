// Package bench is the benchmark harness of make bench: the benchmarks of
// the repository record their raw samples here (Record), and
// bench/cmd/kgdbench runs them and writes bench/RESULTS.md from every
// sample (Summarize, Markdown).
//
// # Rules
//
// A series is one figure of issue 13 measured as a fixed number of
// samples (at least 20) after a warm-up whose samples are dropped, never
// a single b.N timing. The benchmarks that record series run with
// -benchtime=1x: one op is the whole series, so the count does not depend
// on how fast the machine is, and every step is bounded by go test's
// -timeout. Everything listens on and connects to loopback only. Each
// figure reports median, p95, p99 and max (nearest rank) next to its
// target; RESULTS.md also records the machine, the date and the load
// average before and after, because a busy machine gives slower, noisier
// figures.
//
// # Where each figure is measured
//
//  1. push → DevLoop Succeeded: localstack's BenchmarkLocalStack/push, on
//     the real binaries (PublicAPI and PrivateAPI, runner, API), the
//     emulators, the registry, the local control plane and Docker. The
//     phases come from the events' own timestamps and the job document's
//     created_at and started_at.
//  2. runner overhead: runner/internal/pipeline's BenchmarkJob, the demo
//     app through Pipeline.Run and done directly with the same libraries,
//     alternating (internal packages can only be used from runner/).
//  3. webhook → 2xx and deliveries/s: functions/webhook's
//     BenchmarkWebhook, with the emulator alone (Firestore create +
//     Pub/Sub publish) at the same concurrency.
//  4. event → /v1/events with 1 to 1000 streams: api/internal/skaffold's
//     BenchmarkEventLatency, after a warm-up case.
//  5. scale-out, 6. Firestore writes per job (WriteCounter, a counting
//     gRPC proxy in front of the emulator), 7. start → ready:
//     BenchmarkLocalStack/scaleout, /writes and /ready.
//
// # Running
//
//	make bench                                  # everything, ~10–15 min
//	.bin/emulators -quiet -- go run ./bench/cmd/kgdbench -only webhook -out /tmp/R.md
//	go run ./bench/cmd/kgdbench -samples /tmp/kgdbench-*/samples.jsonl  # render again
//
// A benchmark also runs on its own (go test -run '^$' -bench
// BenchmarkWebhook -benchtime 1x ./functions/webhook under the
// emulators); it records nothing unless KGD_BENCH_OUT names a file.
package bench
